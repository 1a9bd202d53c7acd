// Subcommands of the octet program. Each takes the arguments after its name and returns the
// process exit code; errors are octet::Error, reported by main.
#pragma once
#include <string>
#include <vector>

namespace octet::cli {

using Args = std::vector<std::string>;

int doctor(const Args& args);      // doctor.cpp
int demo(const Args& args);        // demo.cpp
int bench(const Args& args);       // bench.cpp
int quantize(const Args& args);    // checkpoint.cpp
int dequantize(const Args& args);  // checkpoint.cpp
int info(const Args& args);        // checkpoint.cpp

}  // namespace octet::cli

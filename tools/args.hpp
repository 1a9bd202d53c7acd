// Command-line parsing for the octet subcommands: positional arguments, boolean flags and
// options that take a value ("--steps 20" or "--steps=20"). Anything malformed throws
// UsageError; the command catches it, prints its usage to stderr and exits with status 2.
#pragma once
#include <cstdint>
#include <cstdio>
#include <map>
#include <set>
#include <stdexcept>
#include <string>
#include <vector>

#include "octet/device.hpp"
#include "octet/error.hpp"
#include "tools/commands.hpp"

namespace octet::cli {

struct UsageError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

class ArgParser {
 public:
  ArgParser(const Args& args, const std::set<std::string>& flags, const std::set<std::string>& options) {
    for (size_t i = 0; i < args.size(); ++i) {
      const std::string& a = args[i];
      if (a.size() < 2 || a.rfind("--", 0) != 0) {
        if (!a.empty() && a[0] == '-' && a != "-") throw UsageError(cat("unknown option '", a, "'"));
        positional_.push_back(a);
        continue;
      }
      const size_t eq = a.find('=');
      const std::string name = a.substr(0, eq);
      if (flags.count(name)) {
        if (eq != std::string::npos) throw UsageError(cat("option ", name, " takes no value"));
        set_once(name, "");
      } else if (options.count(name)) {
        if (eq != std::string::npos) set_once(name, a.substr(eq + 1));
        else if (i + 1 < args.size()) set_once(name, args[++i]);
        else throw UsageError(cat("option ", name, " needs a value"));
      } else {
        throw UsageError(cat("unknown option '", name, "'"));
      }
    }
  }

  const std::vector<std::string>& positional() const { return positional_; }
  bool has(const std::string& name) const { return values_.count(name) > 0; }
  std::string get(const std::string& name, const std::string& fallback = "") const {
    const auto it = values_.find(name);
    return it == values_.end() ? fallback : it->second;
  }
  // An integer in [lo, hi] (the whole text must be a number).
  int64_t integer(const std::string& name, int64_t fallback, int64_t lo, int64_t hi) const {
    if (!has(name)) return fallback;
    const std::string v = get(name);
    size_t used = 0;
    int64_t x = 0;
    try {
      x = std::stoll(v, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used == 0 || used != v.size() || x < lo || x > hi)
      throw UsageError(cat(name, " expects an integer in [", lo, ", ", hi, "], got '", v, "'"));
    return x;
  }
  // --device cpu|cuda|cuda:N, defaulting to the GPU when one is present; the device must exist.
  Device device() const {
    if (!has("--device")) return default_device();
    Device d;
    try {
      d = Device::parse(get("--device"));
    } catch (const Error&) {
      throw UsageError(cat("--device expects cpu, cuda or cuda:N, got '", get("--device"), "'"));
    }
    if (d.is_cuda() && d.index >= cuda_device_count())
      throw UsageError(cat("--device ", d.str(), ": this machine has ", cuda_device_count(), " CUDA device(s)"));
    return d;
  }

 private:
  void set_once(const std::string& name, const std::string& value) {
    if (!values_.emplace(name, value).second) throw UsageError(cat("option ", name, " given twice"));
  }
  std::vector<std::string> positional_;
  std::map<std::string, std::string> values_;
};

// Runs body(); a UsageError prints "octet <command>: <message>" and the usage, and gives 2.
template <class Body>
int with_usage(const char* command, const char* usage, Body body) {
  try {
    return body();
  } catch (const UsageError& e) {
    std::fprintf(stderr, "octet %s: %s\n%s", command, e.what(), usage);
    return 2;
  }
}

}  // namespace octet::cli

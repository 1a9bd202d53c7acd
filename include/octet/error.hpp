// octet::Error and the message convention: "<op>: <argument>: expected <what>, got <what>".
// Every failed check throws; nothing in the library calls exit or abort.
#pragma once
#include <sstream>
#include <stdexcept>
#include <string>
#include <string_view>

namespace octet {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

template <class... Parts>
std::string cat(const Parts&... parts) {
  std::ostringstream s;
  (s << ... << parts);
  return s.str();
}

// Throws Error("<op>: <message>").
[[noreturn]] void fail(std::string_view op, std::string_view message);

// Throws Error("<op>: argument '<arg>': expected <expected>, got <given>").
[[noreturn]] void fail_arg(std::string_view op, std::string_view arg, std::string_view expected,
                           std::string_view given);

}  // namespace octet

// OCTET_CHECK(cond, op, parts...): throws Error("<op>: <parts...>") when cond is false.
#define OCTET_CHECK(cond, op, ...) \
  do {                             \
    if (!(cond)) ::octet::fail((op), ::octet::cat(__VA_ARGS__)); \
  } while (0)

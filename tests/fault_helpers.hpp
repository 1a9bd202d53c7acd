// Helpers of the fault and checkpoint suites: scratch paths, a file's bytes, the temporaries a
// writer left next to a path, and running code in a forked child under a file-size limit.
#pragma once
#include <signal.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <exception>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iterator>
#include <string>
#include <vector>

#include "octet/error.hpp"

namespace octet::test {

inline std::string fault_temp_path(const std::string& name) {
  return (std::filesystem::temp_directory_path() / ("octet_fault_" + std::to_string(::getpid()) + "_" + name)).string();
}

// The file's bytes ("" when it does not exist).
inline std::string file_bytes(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), std::istreambuf_iterator<char>());
}

// Files next to `path` named `path`.<anything>.tmp: what octet's writers use as temporaries.
inline std::vector<std::string> temporaries_of(const std::string& path) {
  namespace fs = std::filesystem;
  const fs::path target(path);
  const std::string prefix = target.filename().string() + ".";
  std::vector<std::string> found;
  for (const auto& e : fs::directory_iterator(target.parent_path().empty() ? fs::path(".") : target.parent_path())) {
    const std::string name = e.path().filename().string();
    if (name.rfind(prefix, 0) == 0 && name.size() > 4 && name.compare(name.size() - 4, 4, ".tmp") == 0)
      found.push_back(name);
  }
  return found;
}

struct ChildResult {
  enum Status { returned, threw_error, threw_other, died } status = died;
  std::string message;  // the exception's message
};

// Runs f in a forked child whose files may not grow past `limit` bytes (RLIMIT_FSIZE, SIGXFSZ
// ignored: a write past the limit fails with EFBIG). The child reports how f ended through a pipe.
inline ChildResult in_child_with_file_limit(rlim_t limit, const std::function<void()>& f) {
  int fds[2];
  if (::pipe(fds) != 0) return {ChildResult::died, std::string("pipe: ") + std::strerror(errno)};
  const pid_t pid = ::fork();
  if (pid == 0) {
    ::close(fds[0]);
    ::signal(SIGXFSZ, SIG_IGN);
    const rlimit lim{limit, limit};
    char status = 'd';
    std::string message;
    if (::setrlimit(RLIMIT_FSIZE, &lim) != 0) {
      message = std::string("setrlimit: ") + std::strerror(errno);
    } else {
      try {
        f();
        status = 'r';
      } catch (const Error& e) {
        status = 'e';
        message = e.what();
      } catch (const std::exception& e) {
        status = 'o';
        message = e.what();
      }
    }
    (void)!::write(fds[1], &status, 1);
    (void)!::write(fds[1], message.data(), message.size());
    ::close(fds[1]);
    ::_exit(0);
  }
  ::close(fds[1]);
  std::string got;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(fds[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0) got.append(buf, static_cast<size_t>(n));
  ::close(fds[0]);
  int wstatus = 0;
  ::waitpid(pid, &wstatus, 0);
  ChildResult r;
  if (got.empty() || !WIFEXITED(wstatus)) return r;
  r.status = got[0] == 'r' ? ChildResult::returned
           : got[0] == 'e' ? ChildResult::threw_error
           : got[0] == 'o' ? ChildResult::threw_other
                           : ChildResult::died;
  r.message = got.substr(1);
  return r;
}

}  // namespace octet::test

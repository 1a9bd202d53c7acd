// Soak: the trainer tests/soak/soak_train.cpp ($OCTET_SOAK_BIN) runs once undisturbed, then again
// in another folder while this case kills it with SIGKILL over and over (half of the kills at a
// random moment, half at once or a random 0-2 ms after it announced a checkpoint save, so that many
// land inside the save) and starts it again each time; it resumes from its newest checkpoint. After
// the last kill it runs to the end: its final training checkpoint (parameters, 8-bit optimizer
// state, clipping histories, random stream, step) must equal the undisturbed run's bit for bit,
// and no checkpoint may ever have been found damaged.
// Size: OCTET_SOAK_STEPS (default 240) steps, a checkpoint every OCTET_SOAK_EVERY (default 8),
// OCTET_SOAK_KILLS (default 16) kills; tools/gpu-check asks for a longer run.
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <random>
#include <thread>

#include "tests/fault_helpers.hpp"
#include "tests/helpers.hpp"

using namespace octet;
namespace fs = std::filesystem;

namespace {

int64_t env_int(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v && *v ? std::atoll(v) : fallback;
}

struct Child {
  pid_t pid = -1;
  int out = -1;  // its stdout
  std::string pending, lines;
};

Child start(const std::vector<std::string>& args) {
  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  Child c;
  c.pid = ::fork();
  REQUIRE(c.pid >= 0);
  if (c.pid == 0) {
    ::dup2(fds[1], 1);
    ::close(fds[0]);
    ::close(fds[1]);
    std::vector<char*> argv;
    for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    ::execv(argv[0], argv.data());
    ::_exit(127);
  }
  ::close(fds[1]);
  c.out = fds[0];
  return c;
}

// Reads what the child printed until `deadline` or a line starting with `wanted` (when given) or
// its end of output; returns true when `wanted` was seen.
bool read_until(Child& c, std::chrono::steady_clock::time_point deadline, const std::string& wanted) {
  char buf[4096];
  while (true) {
    size_t nl;
    while ((nl = c.pending.find('\n')) != std::string::npos) {
      const std::string line = c.pending.substr(0, nl);
      c.pending.erase(0, nl + 1);
      c.lines += line + "\n";
      if (!wanted.empty() && line.rfind(wanted, 0) == 0) return true;
    }
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    pollfd p{c.out, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(left.count())) <= 0) continue;
    const ssize_t n = ::read(c.out, buf, sizeof buf);
    if (n <= 0) return false;
    c.pending.append(buf, static_cast<size_t>(n));
  }
}

// Waits for the child; returns its exit status (-signal when killed) and everything it printed.
int finish(Child& c) {
  read_until(c, std::chrono::steady_clock::now() + std::chrono::hours(1), "");
  ::close(c.out);
  int status = 0;
  ::waitpid(c.pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : -WTERMSIG(status);
}

size_t count_of(const std::string& text, const std::string& what) {
  size_t n = 0;
  for (size_t at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

void soak(Device device) {
  const char* bin = std::getenv("OCTET_SOAK_BIN");
  REQUIRE_MESSAGE(bin != nullptr, "OCTET_SOAK_BIN names the soak_train program (meson test sets it)");
  const std::string steps = std::to_string(env_int("OCTET_SOAK_STEPS", 240));
  const std::string every = std::to_string(env_int("OCTET_SOAK_EVERY", 8));
  const int64_t kills = env_int("OCTET_SOAK_KILLS", 16);
  const std::string dev = device.is_cuda() ? "cuda" : "cpu";
  const fs::path calm = test::fault_temp_path("soak-calm"), killed = test::fault_temp_path("soak-killed");
  fs::remove_all(calm);
  fs::remove_all(killed);

  const auto t0 = std::chrono::steady_clock::now();
  Child reference = start({bin, calm.string(), steps, every, dev});
  REQUIRE(finish(reference) == 0);
  const double calm_seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  std::mt19937_64 rng(20261205);
  int64_t killed_count = 0, inside_save = 0, left_temporary = 0, restarts = 0;
  std::string everything;
  auto temporaries = [&] {
    std::vector<fs::path> found;
    if (fs::exists(killed))
      for (const auto& e : fs::directory_iterator(killed))
        if (e.path().extension() == ".tmp") found.push_back(e.path());
    return found;
  };
  for (int64_t k = 0; k < kills; ++k) {
    for (const fs::path& p : temporaries()) fs::remove(p);  // counted already (the trainer clears them too)
    Child c = start({bin, killed.string(), steps, every, dev});
    ++restarts;
    const auto now = std::chrono::steady_clock::now();
    bool alive = true;
    if (k % 2 == 0) {
      // A random moment within about a fifth of a whole run.
      const auto delay = std::chrono::microseconds(
          std::uniform_int_distribution<int64_t>(0, static_cast<int64_t>(calm_seconds * 2e5) + 1000)(rng));
      alive = !read_until(c, now + delay, "done");
    } else {
      // Just after a save was announced (the second one, so the run moves on).
      alive = read_until(c, now + std::chrono::seconds(120), "saving") &&
              read_until(c, std::chrono::steady_clock::now() + std::chrono::seconds(120), "saving");
      // Every other one at once (inside the save for sure), the others 0-2 ms later.
      const int delay_us = (k / 2) % 2 == 0 ? 0 : std::uniform_int_distribution<int>(0, 2000)(rng);
      if (alive) std::this_thread::sleep_for(std::chrono::microseconds(delay_us));
    }
    if (alive) ::kill(c.pid, SIGKILL);
    const int status = finish(c);
    everything += c.lines;
    if (status == -SIGKILL) {
      ++killed_count;
      // Inside a save: announced and not finished (its last line); caught writing the file: a temporary left.
      const size_t last = c.lines.rfind("\n", c.lines.size() >= 2 ? c.lines.size() - 2 : 0);
      if (c.lines.compare(last == std::string::npos ? 0 : last + 1, 7, "saving ") == 0) ++inside_save;
      if (!temporaries().empty()) ++left_temporary;
    } else {
      CHECK(status == 0);  // it finished before the kill came
    }
    if (fs::exists(killed / "final.safetensors")) break;
  }
  if (!fs::exists(killed / "final.safetensors")) {
    Child last = start({bin, killed.string(), steps, every, dev});
    ++restarts;
    CHECK(finish(last) == 0);
    everything += last.lines;
  }
  MESSAGE("soak on ", dev, ": ", killed_count, " kills (", inside_save, " inside a save, ", left_temporary,
          " of them while writing the file), ", restarts,
          " starts, ", count_of(everything, "resumed "), " resumes, ", steps, " steps");
  CHECK(count_of(everything, "damaged ") == 0);
  CHECK(killed_count >= kills / 2);
  CHECK(inside_save >= 1);

  const TrainingCheckpoint want = load_training_checkpoint((calm / "final.safetensors").string());
  const TrainingCheckpoint got = load_training_checkpoint((killed / "final.safetensors").string());
  CHECK(got.step == want.step);
  CHECK(got.rng == want.rng);
  CHECK(got.optimizer_metadata == want.optimizer_metadata);
  for (const TensorMap TrainingCheckpoint::*part : {&TrainingCheckpoint::parameters, &TrainingCheckpoint::optimizer}) {
    REQUIRE((got.*part).size() == (want.*part).size());
    for (const auto& [name, t] : want.*part) {
      CAPTURE(name);
      REQUIRE((got.*part).count(name) == 1);
      CHECK(test::bitwise_equal((got.*part).at(name), t));
    }
  }
  fs::remove_all(calm);
  fs::remove_all(killed);
}

}  // namespace

OCTET_TEST_BOTH("soak: a trainer killed with SIGKILL again and again ends with an undisturbed run's bits", soak)

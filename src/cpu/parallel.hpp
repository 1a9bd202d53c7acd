// parallel_for over [0, n) in contiguous chunks on std::threads, the calling thread taking the
// last chunk. Chunks are fixed by n and the thread count, so results that depend on the
// chunking stay deterministic for a given machine.
#pragma once
#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace octet::cpu {

inline int cpu_threads() {
  static const int n = std::max(1u, std::min(16u, std::thread::hardware_concurrency()));
  return n;
}

// f(begin, end) on disjoint ranges; runs inline when n is below min_chunk or one thread.
template <class F> void parallel_for(int64_t n, int64_t min_chunk, F&& f) {
  if (n <= 0) return;
  const int64_t threads = std::min<int64_t>(cpu_threads(), (n + min_chunk - 1) / min_chunk);
  if (threads <= 1) {
    f(int64_t{0}, n);
    return;
  }
  const int64_t chunk = (n + threads - 1) / threads;
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(static_cast<size_t>(threads));
  auto run = [&](int64_t t) {
    const int64_t b = t * chunk, e = std::min(n, b + chunk);
    if (b >= e) return;
    try { f(b, e); } catch (...) { errors[static_cast<size_t>(t)] = std::current_exception(); }
  };
  for (int64_t t = 0; t + 1 < threads; ++t) pool.emplace_back(run, t);
  run(threads - 1);
  for (auto& th : pool) th.join();
  for (auto& e : errors) if (e) std::rethrow_exception(e);
}

}  // namespace octet::cpu

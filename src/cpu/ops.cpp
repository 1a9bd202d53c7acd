// CPU reference kernels of the core ops. Plain loops, parallel over large ranges.
#include "src/cpu/ops.hpp"

#include <cmath>
#include <cstring>
#include <vector>

#include "src/cpu/element.hpp"
#include "src/cpu/parallel.hpp"

namespace octet::cpu {

constexpr int64_t kChunk = 1 << 16;

void fill(DType t, void* out, int64_t n, double value) {
  visit_dtype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T v = store<T>(value);
    T* o = static_cast<T*>(out);
    for (int64_t i = 0; i < n; ++i) o[i] = v;
  });
}

void convert(const void* in, DType in_t, void* out, DType out_t, int64_t n) {
  visit_dtype(in_t, [&](auto itag) {
    using I = typename decltype(itag)::type;
    visit_dtype(out_t, [&](auto otag) {
      using O = typename decltype(otag)::type;
      const I* x = static_cast<const I*>(in);
      O* y = static_cast<O*>(out);
      parallel_for(n, kChunk, [&](int64_t b, int64_t e) {
        for (int64_t i = b; i < e; ++i) {
          if constexpr (std::is_same_v<I, float>) y[i] = store<O>(static_cast<double>(x[i]));
          else y[i] = store<O>(load_f64(x[i]));
        }
      });
    });
  });
}

void transpose2d(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_size) {
  const char* x = static_cast<const char*>(in);
  char* y = static_cast<char*>(out);
  constexpr int64_t B = 32;
  for (int64_t r0 = 0; r0 < rows; r0 += B)
    for (int64_t c0 = 0; c0 < cols; c0 += B)
      for (int64_t r = r0; r < std::min(rows, r0 + B); ++r)
        for (int64_t c = c0; c < std::min(cols, c0 + B); ++c)
          std::memcpy(y + (c * rows + r) * elem_size, x + (r * cols + c) * elem_size, elem_size);
}

namespace {
template <class A> A gelu_of(A x) { return A(0.5) * x * (A(1) + std::erf(x * A(0.70710678118654752440))); }
template <class A> A gelu_grad_of(A x) {
  const A cdf = A(0.5) * (A(1) + std::erf(x * A(0.70710678118654752440)));
  const A pdf = std::exp(A(-0.5) * x * x) * A(0.39894228040143267794);
  return cdf + x * pdf;
}
}  // namespace

void binary(Binary op, DType t, const void* a, const void* b, void* out, int64_t n) {
  visit_float(t, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* x = static_cast<const T*>(a);
    const T* y = static_cast<const T*>(b);
    T* o = static_cast<T*>(out);
    parallel_for(n, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const A u = static_cast<A>(load_f64(x[i])), v = static_cast<A>(load_f64(y[i]));
        A r = 0;
        switch (op) {
          case Binary::add: r = u + v; break;
          case Binary::sub: r = u - v; break;
          case Binary::mul: r = u * v; break;
          case Binary::gelu_backward: r = v * gelu_grad_of(u); break;
        }
        o[i] = store<T>(r);
      }
    });
  });
}

void unary(Unary op, DType t, const void* x, double alpha, void* out, int64_t n) {
  visit_float(t, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* in = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    const A al = static_cast<A>(alpha);
    parallel_for(n, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i) {
        const A u = static_cast<A>(load_f64(in[i]));
        A r = 0;
        switch (op) {
          case Unary::abs: r = std::fabs(u); break;
          case Unary::scale: r = u * al; break;
          case Unary::gelu: r = gelu_of(u); break;
          case Unary::sign: r = u > 0 ? A(1) : (u < 0 ? A(-1) : A(0)); break;
        }
        o[i] = store<T>(r);
      }
    });
  });
}

void reduce(Reduce op, DType t, const void* x, int64_t n, void* out) {
  visit_float(t, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    if (op == Reduce::max_abs) {
      float m = 0.0f;
      for (int64_t i = 0; i < n; ++i) {
        const float v = std::fabs(static_cast<float>(load_f64(in[i])));
        if (std::isnan(v)) { m = v; break; }
        if (v > m) m = v;
      }
      *static_cast<float*>(out) = m;
      return;
    }
    double s = 0.0;
    for (int64_t i = 0; i < n; ++i) s += load_f64(in[i]);
    if (op == Reduce::mean) s = n > 0 ? s / static_cast<double>(n) : std::nan("");
    *static_cast<T*>(out) = store<T>(s);
  });
}

void add_bias(DType t, const void* x, const void* bias, void* out, int64_t rows, int64_t cols) {
  visit_float(t, "add_bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* in = static_cast<const T*>(x);
    const T* b = static_cast<const T*>(bias);
    T* o = static_cast<T*>(out);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c)
        o[r * cols + c] = store<T>(static_cast<A>(load_f64(in[r * cols + c])) + static_cast<A>(load_f64(b[c])));
  });
}

void sum_rows(DType t, const void* x, void* out, int64_t rows, int64_t cols) {
  visit_float(t, "sum_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    std::vector<double> acc(static_cast<size_t>(cols), 0.0);
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t c = 0; c < cols; ++c) acc[static_cast<size_t>(c)] += load_f64(in[r * cols + c]);
    T* o = static_cast<T*>(out);
    for (int64_t c = 0; c < cols; ++c) o[c] = store<T>(acc[static_cast<size_t>(c)]);
  });
}

namespace {
// C(M,N) = A(M,K) B(K,N) on A-typed (float or double) copies; rows in parallel, k-blocked.
template <class A> void gemm(const A* a, const A* b, A* c, int64_t m, int64_t k, int64_t n) {
  parallel_for(m, 4, [&](int64_t r0, int64_t r1) {
    constexpr int64_t KB = 256;
    for (int64_t r = r0; r < r1; ++r) {
      A* crow = c + r * n;
      for (int64_t j = 0; j < n; ++j) crow[j] = 0;
      for (int64_t k0 = 0; k0 < k; k0 += KB)
        for (int64_t kk = k0; kk < std::min(k, k0 + KB); ++kk) {
          const A av = a[r * k + kk];
          const A* brow = b + kk * n;
          for (int64_t j = 0; j < n; ++j) crow[j] += av * brow[j];
        }
    }
  });
}
}  // namespace

void matmul(DType t, const void* a, const void* b, void* out, int64_t m, int64_t k, int64_t n) {
  visit_float(t, "matmul", [&](auto tag) {
    using T = typename decltype(tag)::type;
    if constexpr (std::is_same_v<T, float> || std::is_same_v<T, double>) {
      gemm(static_cast<const T*>(a), static_cast<const T*>(b), static_cast<T*>(out), m, k, n);
    } else {
      std::vector<float> fa(static_cast<size_t>(m * k)), fb(static_cast<size_t>(k * n)), fc(static_cast<size_t>(m * n));
      convert(a, t, fa.data(), DType::f32, m * k);
      convert(b, t, fb.data(), DType::f32, k * n);
      gemm(fa.data(), fb.data(), fc.data(), m, k, n);
      convert(fc.data(), DType::f32, out, t, m * n);
    }
  });
}

void axpy(DType t, double alpha, const void* x, void* y, int64_t n) {
  visit_float(t, "axpy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const T* in = static_cast<const T*>(x);
    T* io = static_cast<T*>(y);
    const A al = static_cast<A>(alpha);
    parallel_for(n, kChunk, [&](int64_t lo, int64_t hi) {
      for (int64_t i = lo; i < hi; ++i)
        io[i] = store<T>(std::fma(al, static_cast<A>(load_f64(in[i])), static_cast<A>(load_f64(io[i]))));
    });
  });
}

}  // namespace octet::cpu

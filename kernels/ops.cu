// CUDA kernels of the core ops: fill, transpose, elementwise, deterministic reductions, bias.
// Elementwise kernels (axpy included) are grid-stride loops over 16-byte vectors computing in f32
// (f64 for f64), optionally writing per-block maxima of |out| for fp8_amax. Reductions use a
// fixed grid (a function of n only) and a fixed combination order: same input, same bits.
#include <cmath>

#include "kernels/common.cuh"
#include "kernels/ops.cuh"
#include "src/cpu/fp8_gemm.hpp"

namespace octet::kernels {
namespace {

template <class T> __global__ void fill_kernel(T* out, int64_t n, T v) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = v;
}

template <class T> __global__ void transpose_kernel(const T* in, T* out, int64_t rows, int64_t cols) {
  __shared__ T tile[32][33];
  const int64_t c0 = int64_t(blockIdx.x) * 32, r0 = int64_t(blockIdx.y) * 32;
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t r = r0 + j, c = c0 + threadIdx.x;
    if (r < rows && c < cols) tile[j][threadIdx.x] = in[r * cols + c];
  }
  __syncthreads();
  for (int j = threadIdx.y; j < 32; j += 8) {
    const int64_t c = c0 + j, r = r0 + threadIdx.x;
    if (r < rows && c < cols) out[c * rows + r] = tile[threadIdx.x][j];
  }
}

template <class A> __device__ A gelu_of(A x) { return A(0.5) * x * (A(1) + erf(x * A(0.70710678118654752440))); }
template <class A> __device__ A gelu_grad_of(A x) {
  const A cdf = A(0.5) * (A(1) + erf(x * A(0.70710678118654752440)));
  const A pdf = exp(A(-0.5) * x * x) * A(0.39894228040143267794);
  return cdf + x * pdf;
}

template <class T, class A> __device__ A load_acc(T v) {
  if constexpr (std::is_same_v<A, double>) return load_f64(v); else return load_f32(v);
}

template <class T> using acc_t = std::conditional_t<std::is_same_v<T, double>, double, float>;

template <class T> __device__ __forceinline__ T store_acc(acc_t<T> r) {
  if constexpr (std::is_same_v<T, double>) return r; else return store_f32<T>(r);
}

// The elementwise functions, one type per op so the kernel has no per-element switch.
template <Binary OP> struct BinaryFn {
  template <class A> __device__ A operator()(A u, A v) const {
    if constexpr (OP == Binary::add) return u + v;
    else if constexpr (OP == Binary::sub) return u - v;
    else if constexpr (OP == Binary::mul) return u * v;
    else return v * gelu_grad_of(u);
  }
};
template <Unary OP> struct UnaryFn {
  double alpha;
  template <class A> __device__ A operator()(A u, A) const {
    if constexpr (OP == Unary::abs) return fabs(u);
    else if constexpr (OP == Unary::scale) return u * static_cast<A>(alpha);
    else if constexpr (OP == Unary::gelu) return gelu_of(u);
    else return u > 0 ? A(1) : (u < 0 ? A(-1) : A(0));
  }
};

template <class A> struct AxpyFn {  // y + alpha x with one rounding: a = x, b = y
  A alpha;
  __device__ A operator()(A u, A v) const { return fma(alpha, u, v); }
};

// out[i] = f(a[i], b[i]) (b ignored by unary functions). With `vec` (all pointers 16-byte
// aligned) the body moves 16 bytes per operand per step, two steps' loads issued together; the
// tail and unaligned views go element by element. Inputs are read through the read-only path
// unless Alias (an input overlaps out: axpy, where out is y and each element is read, then
// written, by one thread). Track (not f64): block i writes the max of |out| over its elements to
// amax_partials[i] (the hint that fp8_amax reads, ops.cuh); launches without a hint carry no code for it.
template <bool ReadOnly, class P> __device__ __forceinline__ P load_from(const P* p) {
  if constexpr (ReadOnly) return __ldg(p); else return *p;
}

template <class T, class F, bool Track, bool Alias>
__global__ void elementwise_kernel(F f, const T* a, const T* b, T* out, int64_t n, bool vec,
                                   uint32_t* __restrict__ amax_partials) {
  constexpr int V = 16 / sizeof(T);
  const int64_t tid = blockIdx.x * int64_t(blockDim.x) + threadIdx.x, stride = int64_t(gridDim.x) * blockDim.x;
  uint32_t m = 0;
  VecAbsMax<T> vm;
  int64_t done = 0;
  if (vec) {
    const int64_t nv = n / V;
    const auto* av = reinterpret_cast<const uint4*>(a);
    const auto* bv = reinterpret_cast<const uint4*>(b);
    for (int64_t i = tid; i < nv; i += 2 * stride) {  // two vectors per operand in flight
      const bool second = i + stride < nv;
      uint4 ra[2], rb[2];
      ra[0] = load_from<!Alias>(av + i);
      rb[0] = b ? load_from<!Alias>(bv + i) : ra[0];
      if (second) {
        ra[1] = load_from<!Alias>(av + i + stride);
        rb[1] = b ? load_from<!Alias>(bv + i + stride) : ra[1];
      }
#pragma unroll
      for (int h = 0; h < 2; ++h) {
        if (h == 1 && !second) break;
        const T* ta = reinterpret_cast<const T*>(&ra[h]);
        const T* tb = reinterpret_cast<const T*>(&rb[h]);
        uint4 ro;
        T* to = reinterpret_cast<T*>(&ro);
#pragma unroll
        for (int q = 0; q < V; ++q) {
          to[q] = store_acc<T>(f(load_acc<T, acc_t<T>>(ta[q]), load_acc<T, acc_t<T>>(tb[q])));
        }
        if constexpr (Track) vm.add(ro);
        reinterpret_cast<uint4*>(out)[i + h * stride] = ro;
      }
    }
    done = nv * V;
  }
  for (int64_t i = done + tid; i < n; i += stride) {
    const acc_t<T> u = load_acc<T, acc_t<T>>(a[i]);
    const T r = store_acc<T>(f(u, b ? load_acc<T, acc_t<T>>(b[i]) : u));
    out[i] = r;
    if constexpr (Track) m = max(m, abs_bits(r));
  }
  if constexpr (Track) {
    m = block_max_u32(max(m, vm.ordered_bits()));
    if (threadIdx.x == 0) amax_partials[blockIdx.x] = m;
  }
}

bool aligned16(const void* p) { return reinterpret_cast<uintptr_t>(p) % 16 == 0; }

// Returns the number of amax partials written (0 without amax_partials).
template <class T, class F>
int launch_elementwise(F f, const T* a, const T* b, T* out, int64_t n, uint32_t* amax_partials, cudaStream_t s) {
  const bool vec = aligned16(a) && (!b || aligned16(b)) && aligned16(out);
  const int64_t items = vec ? n / (16 / int64_t(sizeof(T))) + 1 : n;
  if (std::is_same_v<T, double>) amax_partials = nullptr;
  const unsigned grid = grid_for(items, 256, kAmaxPartials);
  const auto overlaps = [&](const T* p) {
    const uintptr_t lo = reinterpret_cast<uintptr_t>(out), hi = lo + sizeof(T) * n, q = reinterpret_cast<uintptr_t>(p);
    return p != nullptr && q < hi && lo < q + sizeof(T) * n;
  };
  const bool alias = overlaps(a) || overlaps(b);
  if (amax_partials && alias) elementwise_kernel<T, F, true, true><<<grid, 256, 0, s>>>(f, a, b, out, n, vec, amax_partials);
  else if (amax_partials) elementwise_kernel<T, F, true, false><<<grid, 256, 0, s>>>(f, a, b, out, n, vec, amax_partials);
  else if (alias) elementwise_kernel<T, F, false, true><<<grid, 256, 0, s>>>(f, a, b, out, n, vec, nullptr);
  else elementwise_kernel<T, F, false, false><<<grid, 256, 0, s>>>(f, a, b, out, n, vec, nullptr);
  OCTET_LAUNCH_CHECK("elementwise_kernel");
  return amax_partials ? static_cast<int>(grid) : 0;
}

// NaN-propagating max of |values|.
__device__ __forceinline__ float max_nan(float m, float v) { return (m != m || v != v) ? NAN : fmaxf(m, v); }

constexpr int kReduceThreads = 256;

template <class A> __device__ __forceinline__ A combine(Reduce op, A acc, A v) {
  return op == Reduce::max_abs ? static_cast<A>(max_nan(static_cast<float>(acc), static_cast<float>(v))) : acc + v;
}

// Tree reduction of one value per thread in a fixed order; the result is valid in thread 0.
template <class A> __device__ A block_reduce(Reduce op, A acc) {
  __shared__ A buf[kReduceThreads];
  buf[threadIdx.x] = acc;
  __syncthreads();
  for (int s = kReduceThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) buf[threadIdx.x] = combine(op, buf[threadIdx.x], buf[threadIdx.x + s]);
    __syncthreads();
  }
  return buf[0];
}

// Pass 1: block b reduces a fixed strided subset of x into partial[b].
template <class T, class A> __global__ void reduce_partial(Reduce op, const T* x, int64_t n, A* partial) {
  A acc = 0;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const A v = load_acc<T, A>(x[i]);
    acc = combine(op, acc, op == Reduce::max_abs ? static_cast<A>(fabsf(static_cast<float>(v))) : v);
  }
  acc = block_reduce(op, acc);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

// Pass 2: one block combines the partials in a fixed order and writes the result.
template <class T, class A> __global__ void reduce_final(Reduce op, const A* partial, int blocks, int64_t n, void* out) {
  A acc = 0;
  for (int i = threadIdx.x; i < blocks; i += blockDim.x) acc = combine(op, acc, partial[i]);
  acc = block_reduce(op, acc);
  if (threadIdx.x != 0) return;
  if (op == Reduce::max_abs) { *static_cast<float*>(out) = static_cast<float>(acc); return; }
  if (op == Reduce::mean) acc = n > 0 ? acc / static_cast<A>(n) : static_cast<A>(NAN);
  *static_cast<T*>(out) = store<T>(acc);
}

template <class T> __global__ void add_bias_kernel(const T* x, const T* bias, T* out, int64_t rows, int64_t cols) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  const int64_t n = rows * cols;
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x)
    out[i] = store<T>(load_acc<T, A>(x[i]) + load_acc<T, A>(bias[i % cols]));
}

// Column sums: a block owns 32 adjacent columns (coalesced 32-wide row segments); its 16 thread
// rows stride over the rows, then combine through shared memory in a fixed order.
constexpr int kSumRowsY = 16;
template <class T> __global__ void sum_rows_kernel(const T* x, T* out, int64_t rows, int64_t cols) {
  using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
  __shared__ A part[kSumRowsY][33];
  const int64_t c = int64_t(blockIdx.x) * 32 + threadIdx.x;
  A acc = 0;
  if (c < cols) {
    int64_t r = threadIdx.y;
    for (; r + 3 * kSumRowsY < rows; r += 4 * kSumRowsY) {
      const A v0 = load_acc<T, A>(x[r * cols + c]), v1 = load_acc<T, A>(x[(r + kSumRowsY) * cols + c]);
      const A v2 = load_acc<T, A>(x[(r + 2 * kSumRowsY) * cols + c]), v3 = load_acc<T, A>(x[(r + 3 * kSumRowsY) * cols + c]);
      acc += (v0 + v1) + (v2 + v3);
    }
    for (; r < rows; r += kSumRowsY) acc += load_acc<T, A>(x[r * cols + c]);
  }
  part[threadIdx.y][threadIdx.x] = acc;
  __syncthreads();
  if (threadIdx.y == 0 && c < cols) {
    A total = 0;
    for (int i = 0; i < kSumRowsY; ++i) total += part[i][threadIdx.x];
    out[c] = store<T>(total);
  }
}

template <class I, class O> __global__ void convert_kernel(const I* in, O* out, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    if constexpr (std::is_same_v<I, double> || std::is_same_v<I, int64_t> || std::is_same_v<I, int32_t> ||
                  std::is_same_v<O, double> || std::is_same_v<O, int64_t> || std::is_same_v<O, int32_t>)
      out[i] = store<O>(load_f64(in[i]));
    else
      out[i] = store_f32<O>(load_f32(in[i]));
  }
}

}  // namespace

void fill(DType t, void* out, int64_t n, double value, cudaStream_t s) {
  if (n == 0) return;
  visit_dtype(t, [&](auto tag) {
    using T = typename decltype(tag)::type;
    T v;
    if constexpr (std::is_same_v<T, __half>) v = __float2half_rn(static_cast<float>(value));
    else if constexpr (std::is_same_v<T, __nv_bfloat16>) v = __float2bfloat16_rn(static_cast<float>(value));
    else if constexpr (std::is_same_v<T, __nv_fp8_e4m3>) v.__x = __nv_cvt_float_to_fp8(static_cast<float>(value), __NV_SATFINITE, __NV_E4M3);
    else if constexpr (std::is_same_v<T, __nv_fp8_e5m2>) v.__x = __nv_cvt_float_to_fp8(static_cast<float>(value), __NV_SATFINITE, __NV_E5M2);
    else if constexpr (std::is_floating_point_v<T>) v = static_cast<T>(value);
    else v = value != value ? T(0) : (value <= double(std::numeric_limits<T>::min()) ? std::numeric_limits<T>::min() : (value >= double(std::numeric_limits<T>::max()) ? std::numeric_limits<T>::max() : static_cast<T>(value)));
    fill_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<T*>(out), n, v);
    OCTET_LAUNCH_CHECK("fill_kernel");
  });
}

void convert(const void* in, DType in_t, void* out, DType out_t, int64_t n, cudaStream_t s) {
  if (n == 0) return;
  visit_dtype(in_t, [&](auto itag) {
    using I = typename decltype(itag)::type;
    visit_dtype(out_t, [&](auto otag) {
      using O = typename decltype(otag)::type;
      convert_kernel<<<grid_for(n, 256), 256, 0, s>>>(static_cast<const I*>(in), static_cast<O*>(out), n);
      OCTET_LAUNCH_CHECK("convert_kernel");
    });
  });
}

void transpose2d(const void* in, void* out, int64_t rows, int64_t cols, size_t elem_size, cudaStream_t s) {
  if (rows == 0 || cols == 0) return;
  const dim3 grid(static_cast<unsigned>((cols + 31) / 32), static_cast<unsigned>((rows + 31) / 32));
  const dim3 block(32, 8);
  OCTET_CHECK(grid.y <= 65535, "t", "2-D transpose with more than 2,097,120 rows is not supported, got ", rows);
  switch (elem_size) {
    case 1: transpose_kernel<<<grid, block, 0, s>>>(static_cast<const uint8_t*>(in), static_cast<uint8_t*>(out), rows, cols); break;
    case 2: transpose_kernel<<<grid, block, 0, s>>>(static_cast<const uint16_t*>(in), static_cast<uint16_t*>(out), rows, cols); break;
    case 4: transpose_kernel<<<grid, block, 0, s>>>(static_cast<const uint32_t*>(in), static_cast<uint32_t*>(out), rows, cols); break;
    default: transpose_kernel<<<grid, block, 0, s>>>(static_cast<const uint64_t*>(in), static_cast<uint64_t*>(out), rows, cols); break;
  }
  OCTET_LAUNCH_CHECK("transpose_kernel");
}

int binary(Binary op, DType t, const void* a, const void* b, void* out, int64_t n, uint32_t* amax_partials,
           cudaStream_t s) {
  if (n == 0) return 0;
  return visit_float(t, "binary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* x = static_cast<const T*>(a);
    const T* y = static_cast<const T*>(b);
    T* o = static_cast<T*>(out);
    switch (op) {
      case Binary::add: return launch_elementwise(BinaryFn<Binary::add>{}, x, y, o, n, amax_partials, s);
      case Binary::sub: return launch_elementwise(BinaryFn<Binary::sub>{}, x, y, o, n, amax_partials, s);
      case Binary::mul: return launch_elementwise(BinaryFn<Binary::mul>{}, x, y, o, n, amax_partials, s);
      case Binary::gelu_backward: return launch_elementwise(BinaryFn<Binary::gelu_backward>{}, x, y, o, n, amax_partials, s);
    }
    return 0;
  });
}

int unary(Unary op, DType t, const void* x, double alpha, void* out, int64_t n, uint32_t* amax_partials,
          cudaStream_t s) {
  if (n == 0) return 0;
  return visit_float(t, "unary", [&](auto tag) {
    using T = typename decltype(tag)::type;
    const T* in = static_cast<const T*>(x);
    T* o = static_cast<T*>(out);
    switch (op) {
      case Unary::abs: return launch_elementwise(UnaryFn<Unary::abs>{alpha}, in, static_cast<const T*>(nullptr), o, n, amax_partials, s);
      case Unary::scale: return launch_elementwise(UnaryFn<Unary::scale>{alpha}, in, static_cast<const T*>(nullptr), o, n, amax_partials, s);
      case Unary::gelu: return launch_elementwise(UnaryFn<Unary::gelu>{alpha}, in, static_cast<const T*>(nullptr), o, n, amax_partials, s);
      case Unary::sign: return launch_elementwise(UnaryFn<Unary::sign>{alpha}, in, static_cast<const T*>(nullptr), o, n, amax_partials, s);
    }
    return 0;
  });
}

void reduce(Reduce op, DType t, const void* x, int64_t n, void* out, cudaStream_t s) {
  visit_float(t, "reduce", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = std::conditional_t<std::is_same_v<T, double>, double, float>;
    const int blocks = static_cast<int>(grid_for(n, kReduceThreads * 8, 1024));
    A* partial = nullptr;
    OCTET_CUDA_CHECK(cudaMallocAsync(&partial, sizeof(A) * blocks, s));
    reduce_partial<T, A><<<blocks, kReduceThreads, 0, s>>>(op, static_cast<const T*>(x), n, partial);
    OCTET_LAUNCH_CHECK("reduce_partial");
    reduce_final<T, A><<<1, kReduceThreads, 0, s>>>(op, partial, blocks, n, out);
    OCTET_LAUNCH_CHECK("reduce_final");
    OCTET_CUDA_CHECK(cudaFreeAsync(partial, s));
  });
}

void add_bias(DType t, const void* x, const void* bias, void* out, int64_t rows, int64_t cols, cudaStream_t s) {
  if (rows * cols == 0) return;
  visit_float(t, "add_bias", [&](auto tag) {
    using T = typename decltype(tag)::type;
    add_bias_kernel<<<grid_for(rows * cols, 256), 256, 0, s>>>(static_cast<const T*>(x), static_cast<const T*>(bias), static_cast<T*>(out), rows, cols);
    OCTET_LAUNCH_CHECK("add_bias_kernel");
  });
}

void sum_rows(DType t, const void* x, void* out, int64_t rows, int64_t cols, cudaStream_t s) {
  if (cols == 0) return;
  visit_float(t, "sum_rows", [&](auto tag) {
    using T = typename decltype(tag)::type;
    OCTET_CHECK((cols + 31) / 32 <= INT32_MAX, "sum_rows", "too many columns: ", cols);
    sum_rows_kernel<<<static_cast<unsigned>((cols + 31) / 32), dim3(32, kSumRowsY), 0, s>>>(
        static_cast<const T*>(x), static_cast<T*>(out), rows, cols);
    OCTET_LAUNCH_CHECK("sum_rows_kernel");
  });
}

int axpy(DType t, double alpha, const void* x, void* y, int64_t n, uint32_t* amax_partials, cudaStream_t s) {
  if (n == 0) return 0;
  return visit_float(t, "axpy", [&](auto tag) {
    using T = typename decltype(tag)::type;
    using A = acc_t<T>;
    return launch_elementwise(AxpyFn<A>{static_cast<A>(alpha)}, static_cast<const T*>(x), static_cast<const T*>(y),
                              static_cast<T*>(y), n, amax_partials, s);
  });
}

}  // namespace octet::kernels

// CUDA side of the fp8 family: intentionally no kernels of its own. The FP8 matmuls are the
// quant family's fused fake-quantize kernels (kernels/quant.cu: one read + one write per
// blockwise operand, an absmax reduction plus one fused pass per global operand) followed by
// cuBLAS GEMMs with transpose flags (detail::gemm_into, src/gemm.hpp), so no operand is copied or
// transposed in memory.

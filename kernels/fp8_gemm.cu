// (to be written) CUDA kernels of the fp8_gemm family.

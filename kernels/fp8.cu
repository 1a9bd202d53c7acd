// (to be written) CUDA kernels of the fp8 family.

// (to be written) CUDA kernels of the quant family.

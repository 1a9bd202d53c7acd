// (to be written) CUDA kernels of the clip family.

"""PyTorch implementations with the same file names as ``myllm101.reference``.

Idiomatic modules and functions: autograd does the backward, attention uses SDPA, everything works
under ``torch.autocast`` (bf16) and ``torch.compile``. On CUDA with triton installed, the layers that
have a kernel in ``myllm101.kernels`` dispatch to it.
"""

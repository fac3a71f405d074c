"""MyLLM101: LLMs from scratch, twice.

- ``myllm101.reference``: NumPy only, forward and hand-written backward, read top to bottom.
- ``myllm101.fast``: PyTorch, the same names, autograd, SDPA, bf16 autocast, torch.compile.
- ``myllm101.kernels``: Triton kernels used by ``fast`` on CUDA.
"""

__version__ = "0.1.0"

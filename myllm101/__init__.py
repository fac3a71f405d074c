"""MyLLM101: LLMs from scratch, twice.

- ``myllm101.reference``: NumPy only, forward and hand-written backward, read top to bottom.
- ``myllm101.fast``: PyTorch, the same names, autograd, SDPA, bf16 autocast, torch.compile.
- ``myllm101.kernels``: Triton kernels used by ``fast`` on CUDA.
"""

import os

# Ask torch's CPU allocator for transparent huge pages, as NumPy does: large fresh tensors then
# fault in far fewer pages (~2x faster big softmax / loss here). Only effective when myllm101 is
# imported before torch; an explicit THP_MEM_ALLOC_ENABLE=0 wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

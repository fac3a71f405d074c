"""MyLLM101: LLMs from scratch, twice.

- ``myllm101.reference``: NumPy only, forward and hand-written backward, read top to bottom.
- ``myllm101.fast``: PyTorch, the same names, autograd, SDPA, bf16 autocast, torch.compile.
- ``myllm101.kernels``: Triton kernels used by ``fast`` on CUDA.
- The library API (``myllm101.api``, docs/API.md), importable from here::

    from myllm101 import AutoModelForCausalLM, AutoTokenizer, pipeline
"""

import os

# Ask torch's CPU allocator for transparent huge pages, as NumPy does: large fresh tensors then
# fault in far fewer pages (~2x faster big softmax / loss here). Only effective when myllm101 is
# imported before torch; an explicit THP_MEM_ALLOC_ENABLE=0 wins.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

__version__ = "0.1.0"

# the library API, imported on first use so `import myllm101` stays light (no torch)
_API = (
    "AutoConfig",
    "AutoModel",
    "AutoModelForCausalLM",
    "AutoModelForMaskedLM",
    "AutoModelForSequenceClassification",
    "AutoTokenizer",
    "Trainer",
    "TrainingArguments",
    "pipeline",
    "register_model",
    "save_pretrained",
)


def __getattr__(name: str):
    if name in _API:
        import myllm101.api as api

        return getattr(api, name)
    raise AttributeError(f"module 'myllm101' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_API])

"""Tokenizers for MyLLM101 (app layer): byte-level BPE vocabularies, trained or pretrained.

- ``myllm101.reference.bpe`` / ``myllm101.fast.bpe``: ``Tokenizer`` and ``bpe_train`` (same API,
  same ids; the fast one adds ``encode_batch`` and ``encode_file``).
- ``myllm101.tokenizer.pretrained``: GPT-2, cl100k_base and o200k_base from installed packages::

      from myllm101.tokenizer import load_pretrained
      enc = load_pretrained("cl100k_base")          # impl="reference" for the NumPy-tree twin
      enc.encode("hello world")                     # [15339, 1917], as tiktoken
"""

from myllm101.fast.bpe import Tokenizer, bpe_train
from myllm101.tokenizer.pretrained import (
    PRETRAINED,
    load_gpt2_files,
    load_pretrained,
    load_tiktoken_file,
)

__all__ = [
    "PRETRAINED",
    "Tokenizer",
    "bpe_train",
    "load_gpt2_files",
    "load_pretrained",
    "load_tiktoken_file",
]

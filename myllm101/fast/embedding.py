"""Token embedding in PyTorch: out[..., :] = table[ids[...], :].

``F.embedding`` gathers rows forward and scatter-adds them backward (repeated ids add up). The id
range is checked in eager mode, where a bad id should fail loudly with its value; inside
``torch.compile`` the check is skipped, since reading the ids' values would split the graph.
"""

import torch
import torch.nn.functional as F
from torch import nn

from myllm101 import checks
from myllm101.checks import expect_float, expect_int, expect_ndim, expect_positive


def check_ids(ids: torch.Tensor, vocab_size: int) -> None:
    """ValueError unless every id is an integer in [0, vocab_size) (``checks.check_ids``, shared
    with the reference); the range part is skipped while torch.compile traces (see above)."""
    expect_int("ids", ids)
    if not torch.compiler.is_compiling():
        checks.check_ids(ids, vocab_size)


def embedding(ids: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """ids: integer (...), table: (V, C) -> (..., C) in the table's dtype."""
    expect_ndim("table", table, 2)
    expect_float("table", table)
    check_ids(ids, table.shape[0])
    if ids.dtype not in (torch.int32, torch.int64):
        ids = ids.long()  # F.embedding indexes with int32 or int64 only
    return F.embedding(ids, table)


class Embedding(nn.Embedding):
    """``nn.Embedding`` (same ``weight`` parameter, N(0, 1) init) whose forward validates ids."""

    def __init__(self, num_embeddings: int, embedding_dim: int, device=None, dtype=None):
        expect_positive("num_embeddings", num_embeddings)
        expect_positive("embedding_dim", embedding_dim)
        super().__init__(num_embeddings, embedding_dim, device=device, dtype=dtype)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return embedding(ids, self.weight)

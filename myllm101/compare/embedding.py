import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import embedding as fast
from myllm101.reference import embedding as ref

# (B, T, V, C)
SHAPES = {"small": (2, 16, 100, 64), "realistic": (8, 512, 32000, 768)}


def _case(variant, ids, table, dout) -> Case:
    idst, tablet, doutt = leaf(ids), leaf(table), leaf(dout, False)

    def ref_backward():
        _, cache = ref.embedding_forward(ids, table)
        return (ref.embedding_backward(dout, cache),)

    B, T = ids.shape
    V, C = table.shape
    return Case(
        "embedding",
        variant,
        f"B={B} T={T} V={V} C={C}",
        ref_forward=lambda: ref.embedding_forward(ids, table)[0],
        fast_forward=lambda: fast.embedding(idst, tablet.detach()),
        ref_backward=ref_backward,
        fast_backward=lambda: grads_of(fast.embedding(idst, tablet), (tablet,), doutt),
    )


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, V, C = SHAPES[size]
    rng = np.random.default_rng(seed)
    table = rng.standard_normal((V, C)).astype(dtype)
    dout = rng.standard_normal((B, T, C)).astype(dtype)
    ids = rng.integers(0, V, size=(B, T))
    # few distinct ids, each repeated many times: the backward must add every repeat
    repeated = rng.integers(0, 8, size=(B, T))
    return [
        _case("embedding", ids, table, dout),
        _case("repeated_ids", repeated, table, dout),
    ]

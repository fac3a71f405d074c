"""Dropout is random, so both sides replay one keep-mask drawn by the reference: the table then
checks the scaling and the gradient, and the timing compares the same work (apply the mask, and
route the gradient through it). Drawing the mask is left out of these timings: NumPy's and
torch's generators never draw the same bits, so a case that drew on both sides could not agree."""

import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import dropout as fast
from myllm101.reference import dropout as ref

SHAPES = {"small": (2, 16, 64), "realistic": (8, 512, 768)}
P = 0.1  # GPT-2's dropout rate


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    mask = ref.dropout_mask(x.shape, P, rng)  # (B, T, C) bool, shared by both sides
    xt, dyt, maskt = leaf(x), leaf(dy, False), leaf(mask, False)

    def ref_backward():
        _, cache = ref.dropout_forward(x, P, None, mask=mask)
        return (ref.dropout_backward(dy, cache),)

    return [
        Case(
            "dropout",
            "dropout",
            f"B={B} T={T} C={C} p={P}",
            ref_forward=lambda: ref.dropout_forward(x, P, None, mask=mask)[0],
            fast_forward=lambda: fast.dropout_with_mask(xt.detach(), maskt, P),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast.dropout_with_mask(xt, maskt, P), (xt,), dyt),
        )
    ]

import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import rmsnorm as fast
from myllm101.reference import rmsnorm as ref

SHAPES = {"small": (2, 16, 64), "realistic": (8, 512, 768)}


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    xt, wt, dyt = leaf(x), leaf(w), leaf(dy, False)

    def ref_backward():
        _, cache = ref.rmsnorm_forward(x, w)
        return ref.rmsnorm_backward(dy, cache)

    return [
        Case(
            "rmsnorm",
            "rmsnorm",
            f"B={B} T={T} C={C}",
            ref_forward=lambda: ref.rmsnorm_forward(x, w)[0],
            fast_forward=lambda: fast.rmsnorm(xt.detach(), wt.detach()),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast.rmsnorm(xt, wt), (xt, wt), dyt),
        )
    ]

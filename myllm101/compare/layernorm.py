import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import layernorm as fast
from myllm101.reference import layernorm as ref

SHAPES = {"small": (2, 16, 64), "realistic": (8, 512, 768)}


def _case(variant, x, w, b, dy) -> Case:
    xt, wt, dyt = leaf(x), leaf(w), leaf(dy, False)
    bt = None if b is None else leaf(b)
    params = (xt, wt) if b is None else (xt, wt, bt)

    def ref_backward():
        _, cache = ref.layernorm_forward(x, w, b)
        dx, dw, db = ref.layernorm_backward(dy, cache)
        return (dx, dw) if b is None else (dx, dw, db)

    B, T, C = x.shape
    return Case(
        "layernorm",
        variant,
        f"B={B} T={T} C={C}",
        ref_forward=lambda: ref.layernorm_forward(x, w, b)[0],
        fast_forward=lambda: fast.layernorm(
            xt.detach(), wt.detach(), None if bt is None else bt.detach()
        ),
        ref_backward=ref_backward,
        fast_backward=lambda: grads_of(fast.layernorm(xt, wt, bt), params, dyt),
    )


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C = SHAPES[size]
    rng = np.random.default_rng(seed)
    # a non-zero mean and a large scale: the centring step has something to do
    x = (3.0 + 2.0 * rng.standard_normal((B, T, C))).astype(dtype)
    w = rng.standard_normal(C).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    return [_case("layernorm", x, w, b, dy), _case("no_bias", x, w, None, dy)]

import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import linear as fast
from myllm101.reference import linear as ref

# (B, T, C); the MLP's up-projection maps C -> 4C
SHAPES = {"small": (2, 16, 64), "realistic": (8, 512, 768)}


def _case(variant, x, w, b, dy) -> Case:
    xt, wt, dyt = leaf(x), leaf(w), leaf(dy, False)
    bt = None if b is None else leaf(b)
    params = (xt, wt) if b is None else (xt, wt, bt)

    def ref_backward():
        _, cache = ref.linear_forward(x, w, b)
        dx, dw, db = ref.linear_backward(dy, cache)
        return (dx, dw) if b is None else (dx, dw, db)

    B, T, C_in = x.shape
    return Case(
        "linear",
        variant,
        f"B={B} T={T} {C_in}->{w.shape[0]}",
        ref_forward=lambda: ref.linear_forward(x, w, b)[0],
        fast_forward=lambda: fast.linear(
            xt.detach(), wt.detach(), None if bt is None else bt.detach()
        ),
        ref_backward=ref_backward,
        fast_backward=lambda: grads_of(fast.linear(xt, wt, bt), params, dyt),
    )


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    cases = []
    for variant, out, bias in (
        ("linear", C, True),
        ("no_bias", C, False),
        ("mlp_up", 4 * C, True),
    ):
        w = (rng.standard_normal((out, C)) / np.sqrt(C)).astype(dtype)  # nn.Linear-like scale
        b = rng.standard_normal(out).astype(dtype) if bias else None
        dy = rng.standard_normal((B, T, out)).astype(dtype)
        cases.append(_case(variant, x, w, b, dy))
    return cases

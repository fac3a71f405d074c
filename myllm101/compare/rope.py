import numpy as np

from myllm101.compare import Case, grads_of, leaf, torch_dtype
from myllm101.fast import rope as fast
from myllm101.reference import rope as ref

# (B, H, T, D): q after the projection, split into heads (width 768 = 12 heads of 64)
SHAPES = {"small": (2, 4, 16, 16), "realistic": (8, 12, 512, 64)}


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, H, T, D = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, H, T, D)).astype(dtype)
    dy = rng.standard_normal((B, H, T, D)).astype(dtype)
    xt, dyt = leaf(x), leaf(dy, False)
    # each side builds its own tables (float64, then cast), so the tables are compared too
    cos, sin = ref.rope_frequencies(D, T)
    fcos, fsin = fast.rope_frequencies(D, T, dtype=torch_dtype(dtype))

    def ref_backward():
        _, cache = ref.rope_forward(x, cos, sin)
        return (ref.rope_backward(dy, cache),)

    return [
        Case(
            "rope",
            "rope",
            f"B={B} H={H} T={T} D={D}",
            ref_forward=lambda: ref.rope_forward(x, cos, sin)[0],
            fast_forward=lambda: fast.apply_rope(xt.detach(), fcos, fsin),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast.apply_rope(xt, fcos, fsin), (xt,), dyt),
        )
    ]

import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import softmax as fast
from myllm101.reference import softmax as ref

# attention scores (B, heads, T, T), normalized over the last axis (the keys)
SHAPES = {"small": (2, 4, 16, 16), "realistic": (8, 12, 512, 512)}


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, H, T, _ = SHAPES[size]
    rng = np.random.default_rng(seed)
    x, dy = (rng.standard_normal(SHAPES[size]).astype(dtype) for _ in range(2))
    xt, dyt = leaf(x), leaf(dy, False)

    def case(variant, ref_fwd, ref_bwd, fast_fn):
        def ref_backward():
            _, cache = ref_fwd(x)
            return (ref_bwd(dy, cache),)

        return Case(
            "softmax",
            variant,
            f"B={B} H={H} T={T} scores TxT",
            ref_forward=lambda: ref_fwd(x)[0],
            fast_forward=lambda: fast_fn(xt.detach()),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast_fn(xt), (xt,), dyt),
        )

    return [
        case("softmax", ref.softmax_forward, ref.softmax_backward, fast.softmax),
        case("log_softmax", ref.log_softmax_forward, ref.log_softmax_backward, fast.log_softmax),
    ]

import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import activations as fast
from myllm101.reference import activations as ref

# the MLP's hidden activations: (B, T, 4C), C = 768 at the realistic size
SHAPES = {"small": (2, 16, 64), "realistic": (8, 512, 3072)}


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, H = SHAPES[size]
    shape = f"B={B} T={T} H={H}"
    rng = np.random.default_rng(seed)
    x, up, dy = (rng.standard_normal((B, T, H)).astype(dtype) for _ in range(3))
    xt, upt, dyt = leaf(x), leaf(up), leaf(dy, False)

    def unary(variant, ref_fwd, ref_bwd, fast_fn):
        def ref_backward():
            _, cache = ref_fwd(x)
            return (ref_bwd(dy, cache),)

        return Case(
            "activations",
            variant,
            shape,
            ref_forward=lambda: ref_fwd(x)[0],
            fast_forward=lambda: fast_fn(xt.detach()),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast_fn(xt), (xt,), dyt),
        )

    def swiglu_backward():
        _, cache = ref.swiglu_forward(x, up)
        return ref.swiglu_backward(dy, cache)

    return [
        unary("gelu", ref.gelu_forward, ref.gelu_backward, fast.gelu),
        unary(
            "gelu_tanh",
            lambda a: ref.gelu_forward(a, "tanh"),
            ref.gelu_backward,
            lambda a: fast.gelu(a, "tanh"),
        ),
        unary("silu", ref.silu_forward, ref.silu_backward, fast.silu),
        Case(
            "activations",
            "swiglu",
            shape,
            ref_forward=lambda: ref.swiglu_forward(x, up)[0],
            fast_forward=lambda: fast.swiglu(xt.detach(), upt.detach()),
            ref_backward=swiglu_backward,
            fast_backward=lambda: grads_of(fast.swiglu(xt, upt), (xt, upt), dyt),
        ),
    ]

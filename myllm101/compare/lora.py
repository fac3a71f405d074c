import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import lora as fast
from myllm101.reference import lora as ref

# (batch, seq, in = out width, rank): realistic is one attention projection of GPT-2 small
SHAPES = {"small": (2, 16, 64, 4), "realistic": (8, 512, 768, 8)}
ALPHA = 16.0


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C, r = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, C)).astype(dtype)
    w = (rng.standard_normal((C, C)) / np.sqrt(C)).astype(dtype)
    b = rng.standard_normal(C).astype(dtype)
    A = (rng.standard_normal((r, C)) / np.sqrt(C)).astype(dtype)
    # a trained adapter: B is random here (a fresh one is zero, which would hide bugs in B's path)
    Bm = (rng.standard_normal((C, r)) / np.sqrt(r)).astype(dtype)
    dy = rng.standard_normal((B, T, C)).astype(dtype)
    # the base layer is frozen: its tensors do not require grad, so autograd computes no dW
    xt, wt, bt, At, Bt, dyt = (
        leaf(x),
        leaf(w, False),
        leaf(b, False),
        leaf(A),
        leaf(Bm),
        leaf(dy, False),
    )

    def ref_backward():
        _, cache = ref.lora_linear_forward(x, w, b, A, Bm, ALPHA)
        return ref.lora_linear_backward(dy, cache)

    return [
        Case(
            "lora",
            "lora",
            f"B={B} T={T} C={C} r={r}",
            ref_forward=lambda: ref.lora_linear_forward(x, w, b, A, Bm, ALPHA)[0],
            fast_forward=lambda: fast.lora_linear(
                xt.detach(), wt, bt, At.detach(), Bt.detach(), ALPHA
            ),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(
                fast.lora_linear(xt, wt, bt, At, Bt, ALPHA), (xt, At, Bt), dyt
            ),
        ),
        Case(
            "lora",
            "merge",
            f"C={C} r={r}",
            ref_forward=lambda: ref.lora_merge(w, A, Bm, ALPHA),
            fast_forward=lambda: fast.lora_merge(wt, At.detach(), Bt.detach(), ALPHA),
        ),
    ]

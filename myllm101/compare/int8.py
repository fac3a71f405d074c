import numpy as np

from myllm101.compare import Case, grads_of, leaf
from myllm101.fast import int8 as fast
from myllm101.reference import int8 as ref

# (batch, seq, in width, out width)
SHAPES = {"small": (2, 16, 64, 48), "realistic": (8, 512, 768, 768)}


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, K, N = SHAPES[size]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((B, T, K)).astype(dtype)
    w = (rng.standard_normal((N, K)) / np.sqrt(K)).astype(dtype)
    b = rng.standard_normal(N).astype(dtype)
    dy = rng.standard_normal((B, T, N)).astype(dtype)
    w_q, w_scale = ref.quantize_per_channel(w)
    x_q, _ = ref.quantize_per_token(x.reshape(-1, K))
    xt, wt, bt, dyt = leaf(x), leaf(w, False), leaf(b, False), leaf(dy, False)
    w_qt, w_scalet, x_qt = leaf(w_q), leaf(w_scale, False), leaf(x_q)

    def ref_backward():
        _, cache = ref.int8_linear_forward(x, w_q, w_scale, b)
        return (ref.int8_linear_backward(dy, cache),)

    # quantized codes and int32 sums must agree exactly; float outputs to the dtype's tolerance
    return [
        Case(
            "int8",
            "per_channel",
            f"W=({N}, {K})",
            ref_forward=lambda: ref.quantize_per_channel(w)[0],
            fast_forward=lambda: fast.quantize_per_channel(wt)[0],
        ),
        Case(
            "int8",
            "per_token",
            f"X=({B * T}, {K})",
            ref_forward=lambda: ref.quantize_per_token(x.reshape(-1, K))[0],
            fast_forward=lambda: fast.quantize_per_token(xt.detach().reshape(-1, K))[0],
        ),
        Case(
            "int8",
            "int8_matmul",
            f"M={B * T} K={K} N={N}",
            ref_forward=lambda: ref.int8_matmul(x_q, w_q),
            fast_forward=lambda: fast.int8_matmul(x_qt, w_qt),
        ),
        Case(
            "int8",
            "int8_linear",
            f"B={B} T={T} {K}->{N}",
            ref_forward=lambda: ref.int8_linear_forward(x, w_q, w_scale, b)[0],
            fast_forward=lambda: fast.int8_linear(xt.detach(), w_qt, w_scalet, bt),
            ref_backward=ref_backward,
            fast_backward=lambda: grads_of(fast.int8_linear(xt, w_qt, w_scalet, bt), (xt,), dyt),
        ),
        Case(
            "int8",
            "w8a8_linear",
            f"B={B} T={T} {K}->{N}",
            ref_forward=lambda: ref.w8a8_linear_forward(x, w_q, w_scale, b),
            fast_forward=lambda: fast.w8a8_linear(xt.detach(), w_qt, w_scalet, bt),
        ),
    ]

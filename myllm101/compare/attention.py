import numpy as np
import torch

from myllm101.compare import Case, grads_of, leaf, torch_dtype
from myllm101.fast import attention as fast
from myllm101.reference import attention as ref
from myllm101.reference.rope import rope_frequencies

# (B, T, C, H): realistic is GPT-2 small's width (768 = 12 heads of 64) at 512 tokens
SHAPES = {"small": (2, 16, 64, 4), "realistic": (8, 512, 768, 12)}
ROPE_THETA = 10000.0


def left_padding(rng, B: int, T: int) -> np.ndarray:
    """(B, T) bool, True = real token; rows 1.. pad up to half their length on the left."""
    n_pad = rng.integers(0, T // 2 + 1, size=B)
    n_pad[0] = 0
    return np.arange(T)[None, :] >= n_pad[:, None]


def _sdpa_case(variant, q, k, v, dout, causal, mask) -> Case:
    qt, kt, vt, dt = leaf(q), leaf(k), leaf(v), leaf(dout, False)
    mt = None if mask is None else leaf(mask, False)

    def ref_backward():
        _, cache = ref.scaled_dot_product_attention_forward(q, k, v, causal, mask)
        return ref.scaled_dot_product_attention_backward(dout, cache)

    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    return Case(
        "attention",
        variant,
        f"B={B} H={H}/{Hkv} T={T} S={S} D={D}",
        ref_forward=lambda: ref.scaled_dot_product_attention_forward(q, k, v, causal, mask)[0],
        fast_forward=lambda: fast.scaled_dot_product_attention(
            qt.detach(), kt.detach(), vt.detach(), causal, mt
        ),
        ref_backward=ref_backward,
        fast_backward=lambda: grads_of(
            fast.scaled_dot_product_attention(qt, kt, vt, causal, mt), (qt, kt, vt), dt
        ),
    )


def _mha_case(variant, rng, x, dy, H, Hkv, bias, theta, dtype) -> Case:
    B, T, C = x.shape
    D = C // H
    m = fast.MultiHeadAttention(C, H, Hkv, bias=bias, rope_theta=theta, max_seq_len=T)
    m = m.to(torch_dtype(dtype))
    params = {}
    for name, p in m.named_parameters():  # nn.Linear-like scale, drawn from the case's rng
        scale = p.shape[-1] ** -0.5 if name.endswith("weight") else 0.1
        params[name] = (rng.standard_normal(tuple(p.shape)) * scale).astype(dtype)
    m.load_state_dict({name: leaf(a, False) for name, a in params.items()})
    rope = None if theta is None else rope_frequencies(D, T, theta)
    xt, dyt = leaf(x), leaf(dy, False)
    # without RoPE the k bias adds the same q.b_k to every score of a row, which softmax ignores:
    # its gradient is exactly 0 and both sides return rounding noise, so it is left out here
    # (parity_tests/test_attention.py checks that it vanishes)
    names = [n for n in params if not (n == "k_proj.bias" and theta is None)]
    fast_params = tuple(dict(m.named_parameters())[name] for name in names)

    def ref_backward():
        _, cache = ref.mha_forward(x, params, H, Hkv, True, None, rope)
        dx, grads = ref.mha_backward(dy, cache)
        return (dx, *(grads[name] for name in names))

    def fast_forward():
        with torch.no_grad():
            return m(xt.detach())

    return Case(
        "attention",
        variant,
        f"B={B} T={T} C={C} H={H}/{Hkv}",
        ref_forward=lambda: ref.mha_forward(x, params, H, Hkv, True, None, rope)[0],
        fast_forward=fast_forward,
        ref_backward=ref_backward,
        fast_backward=lambda: grads_of(m(xt), (xt, *fast_params), dyt),
    )


def make_cases(size: str, dtype: str, seed: int) -> list[Case]:
    B, T, C, H = SHAPES[size]
    D, Hkv = C // H, H // 3 if H % 3 == 0 else H // 2  # GQA: 3 (or 2) query heads per kv head
    rng = np.random.default_rng(seed)

    def normal(*shape):
        return rng.standard_normal(shape).astype(dtype)

    q, k, v, dout = normal(B, H, T, D), normal(B, H, T, D), normal(B, H, T, D), normal(B, H, T, D)
    kg, vg = normal(B, Hkv, T, D), normal(B, Hkv, T, D)
    Tnew = max(1, T // 4)  # KV-cache step: the last quarter of the tokens query the whole cache
    x, dy = normal(B, T, C), normal(B, T, C)
    return [
        _sdpa_case("causal", q, k, v, dout, True, None),
        _sdpa_case("gqa", q, kg, vg, dout, True, None),
        _sdpa_case("padded", q, k, v, dout, True, left_padding(rng, B, T)),
        _sdpa_case("kv_cache", q[:, :, -Tnew:], k, v, dout[:, :, -Tnew:], True, None),
        _mha_case("mha", rng, x, dy, H, H, True, None, dtype),  # GPT-2 style: biases, no RoPE
        _mha_case("mha_rope_gqa", rng, x, dy, H, Hkv, False, ROPE_THETA, dtype),  # LLaMA style
    ]

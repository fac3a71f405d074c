"""Attention: reference == fast (forward and every gradient) for SDPA and the MHA block, reference
backward == finite differences, both == a naive per-query loop, plus the mask semantics
(causality, padding, fully masked rows, KV-cache alignment)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast import attention as fast
from myllm101.reference import attention as ref
from myllm101.reference.rope import rope_frequencies
from parity_tests.helpers import (
    TOL,
    TORCH_DTYPE,
    assert_close,
    check_finite_differences,
    dtypes,
    examples,
    rng_array,
    seeds,
    to_torch,
)


def random_padding(rng, B, S, left=True):
    """(B, S) bool, True = real token. Left padding (as in batched generation) or random holes."""
    if left:
        n_pad = rng.integers(0, S + 1, size=B)  # may pad a whole row: every query row dead
        return np.arange(S)[None, :] >= n_pad[:, None]
    return rng.random((B, S)) < 0.7


def qkv(rng, B, H, Hkv, T, S, D, dtype):
    return (
        rng_array(rng, (B, H, T, D), dtype),
        rng_array(rng, (B, Hkv, S, D), dtype),
        rng_array(rng, (B, Hkv, S, D), dtype),
    )


def fast_sdpa_grads(q, k, v, dout, causal, mask, scale=None):
    qt, kt, vt = to_torch(q, True), to_torch(k, True), to_torch(v, True)
    mt = None if mask is None else to_torch(mask)
    out = fast.scaled_dot_product_attention(qt, kt, vt, causal, mt, scale)
    return out, torch.autograd.grad(out, (qt, kt, vt), to_torch(dout))


@given(
    B=st.integers(1, 3),
    Hkv=st.integers(1, 3),
    G=st.integers(1, 3),
    T=st.integers(1, 16),
    extra=st.integers(0, 8),
    D=st.one_of(st.integers(1, 8), st.sampled_from([16, 32, 64])),  # odd sizes and real head dims
    causal=st.booleans(),
    padding=st.sampled_from([None, "left", "holes"]),
    scale=st.sampled_from([None, 0.3]),
    dtype=dtypes,
    seed=seeds,
)
def test_sdpa_matches_torch(B, Hkv, G, T, extra, D, causal, padding, scale, dtype, seed):
    rng = np.random.default_rng(seed)
    S = T + extra
    q, k, v = qkv(rng, B, Hkv * G, Hkv, T, S, D, dtype)
    dout = rng_array(rng, (B, Hkv * G, T, D), dtype)
    mask = None if padding is None else random_padding(rng, B, S, left=padding == "left")

    out, cache = ref.scaled_dot_product_attention_forward(q, k, v, causal, mask, scale)
    grads = ref.scaled_dot_product_attention_backward(dout, cache)
    assert out.dtype == np.dtype(dtype) and all(g.dtype == np.dtype(dtype) for g in grads)
    out_t, grads_t = fast_sdpa_grads(q, k, v, dout, causal, mask, scale)
    assert out_t.dtype == TORCH_DTYPE[dtype]

    tol = TOL[dtype]
    assert_close(out, out_t, name="out", **tol)
    for name, g, gt in zip(("dq", "dk", "dv"), grads, grads_t):
        assert_close(g, gt, name=name, **tol)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_sdpa_realistic_size(dtype):
    # GPT-2 small's head dim (64) over 128 causal positions, 8 query heads sharing 2 kv heads, left
    # padding. Every output is a sum of <= 128 softmax-weighted terms of size ~1 (or of 64 products
    # for the scores): float32 rounding leaves ~1e-6, 6-20x inside TOL (measured: max abs error
    # 8e-7 on out, 3e-6 on dv of size ~10)
    rng = np.random.default_rng(0)
    q, k, v = qkv(rng, 2, 8, 2, 128, 128, 64, dtype)
    dout = rng_array(rng, q.shape, dtype)
    mask = random_padding(rng, 2, 128)
    out, cache = ref.scaled_dot_product_attention_forward(q, k, v, True, mask)
    grads = ref.scaled_dot_product_attention_backward(dout, cache)
    out_t, grads_t = fast_sdpa_grads(q, k, v, dout, True, mask)
    for name, a, t in zip(("out", "dq", "dk", "dv"), (out, *grads), (out_t, *grads_t)):
        assert_close(a, t, name=name, **TOL[dtype])


def naive_attention(q, k, v, causal, mask, scale):
    """Independent oracle: one query row at a time, positions and masks spelled out."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    out = np.zeros_like(q)
    for b in range(B):
        for h in range(H):
            kv = h // (H // Hkv)
            for t in range(T):
                pos = S - T + t  # this query's absolute position
                keys = [
                    s for s in range(S) if (not causal or s <= pos) and (mask is None or mask[b, s])
                ]
                if not keys:
                    continue  # no key to attend to: the output stays zero
                scores = np.array([q[b, h, t] @ k[b, kv, s] * scale for s in keys])
                w = np.exp(scores - scores.max())
                w /= w.sum()
                out[b, h, t] = sum(wi * v[b, kv, s] for wi, s in zip(w, keys))
    return out


@given(causal=st.booleans(), padding=st.booleans(), Hkv=st.sampled_from([1, 2, 4]), seed=seeds)
@settings(max_examples=examples(8))
def test_sdpa_matches_naive_loop(causal, padding, Hkv, seed):
    rng = np.random.default_rng(seed)
    B, H, T, S, D = 2, 4, 3, 5, 3
    q, k, v = qkv(rng, B, H, Hkv, T, S, D, "float64")
    mask = random_padding(rng, B, S) if padding else None
    expected = naive_attention(q, k, v, causal, mask, D**-0.5)
    assert_close(
        ref.scaled_dot_product_attention_forward(q, k, v, causal, mask)[0],
        expected,
        name="reference",
        **TOL["float64"],
    )
    got = fast.scaled_dot_product_attention(
        to_torch(q), to_torch(k), to_torch(v), causal, None if mask is None else to_torch(mask)
    )
    assert_close(got, expected, name="fast", **TOL["float64"])


@given(seed=seeds, causal=st.booleans())
@settings(max_examples=examples(6))
def test_sdpa_finite_differences(seed, causal):
    rng = np.random.default_rng(seed)
    q, k, v = qkv(rng, 2, 4, 2, 3, 4, 3, "float64")  # GQA, S > T
    dout = rng_array(rng, q.shape)
    mask = np.array([[False, False, True, True], [True, False, True, True]])  # holes + left pad
    dq, dk, dv = ref.scaled_dot_product_attention_backward(
        dout, ref.scaled_dot_product_attention_forward(q, k, v, causal, mask)[1]
    )
    check_finite_differences(
        lambda: ref.scaled_dot_product_attention_forward(q, k, v, causal, mask)[0],
        {"q": q, "k": k, "v": v},
        {"q": dq, "k": dk, "v": dv},
        dout,
    )


def test_fully_masked_rows_give_zeros_and_zero_grads():
    # left padding + causal: in batch row 0 the first 3 queries only see padded keys
    rng = np.random.default_rng(0)
    q, k, v = qkv(rng, 2, 2, 1, 5, 5, 4, "float64")
    dout = rng_array(rng, q.shape)
    mask = np.array([[False, False, False, True, True], [True] * 5])
    out, cache = ref.scaled_dot_product_attention_forward(q, k, v, True, mask)
    dq, dk, dv = ref.scaled_dot_product_attention_backward(dout, cache)
    out_t, (dqt, dkt, dvt) = fast_sdpa_grads(q, k, v, dout, True, mask)
    for name, a in dict(
        out=out, dq=dq, dk=dk, dv=dv, out_t=out_t, dq_t=dqt, dk_t=dkt, dv_t=dvt
    ).items():
        assert np.all(np.isfinite(np.asarray(a.detach() if isinstance(a, torch.Tensor) else a))), (
            name
        )
    for a in (out, dq, out_t.detach().numpy(), dqt.numpy()):
        assert np.all(a[0, :, :3] == 0) and np.any(a[0, :, 3:] != 0)
    for a in (dk, dv, dkt.numpy(), dvt.numpy()):
        assert np.all(a[0, :, :3] == 0)  # padded keys never receive gradient


@given(T=st.integers(1, 5), extra=st.integers(1, 6), seed=seeds)
@settings(max_examples=examples(10))
def test_causal_with_cache_is_bottom_right_aligned(T, extra, seed):
    # KV-cache decoding: T new queries against S = T + extra keys must equal the last T rows of
    # full causal attention over all S positions
    rng = np.random.default_rng(seed)
    S = T + extra
    q_all, k, v = qkv(rng, 2, 4, 2, S, S, 3, "float64")
    full = ref.scaled_dot_product_attention_forward(q_all, k, v, causal=True)[0]
    q = q_all[:, :, -T:]
    assert_close(
        ref.scaled_dot_product_attention_forward(q, k, v, causal=True)[0],
        full[:, :, -T:],
        **TOL["float64"],
    )
    got = fast.scaled_dot_product_attention(to_torch(q), to_torch(k), to_torch(v), causal=True)
    assert_close(got, full[:, :, -T:], name="fast", **TOL["float64"])


def make_params(rng, C, H, Hkv, D, bias, dtype="float64"):
    shapes = {
        "q_proj": (H * D, C),
        "k_proj": (Hkv * D, C),
        "v_proj": (Hkv * D, C),
        "o_proj": (C, H * D),
    }
    params = {}
    for name, shape in shapes.items():
        params[f"{name}.weight"] = rng_array(rng, shape, dtype, scale=shape[1] ** -0.5)
        if bias:
            params[f"{name}.bias"] = rng_array(rng, shape[:1], dtype, scale=0.1)
    return params


def fast_module(params, C, H, Hkv, bias, theta, dtype):
    m = fast.MultiHeadAttention(C, H, Hkv, bias=bias, rope_theta=theta, max_seq_len=16)
    m = m.to(TORCH_DTYPE[dtype])
    m.load_state_dict({key: to_torch(value) for key, value in params.items()})
    return m


@given(
    B=st.integers(1, 2),
    T=st.integers(1, 12),
    Hkv=st.integers(1, 2),
    G=st.integers(1, 3),
    D=st.sampled_from([2, 4, 16]),
    bias=st.booleans(),
    theta=st.sampled_from([None, 100.0]),
    causal=st.booleans(),
    padding=st.booleans(),
    dtype=dtypes,
    seed=seeds,
)
def test_mha_matches_torch(B, T, Hkv, G, D, bias, theta, causal, padding, dtype, seed):
    rng = np.random.default_rng(seed)
    H = Hkv * G
    C = H * D
    params = make_params(rng, C, H, Hkv, D, bias, dtype)
    x, dy = rng_array(rng, (B, T, C), dtype), rng_array(rng, (B, T, C), dtype)
    mask = random_padding(rng, B, T) if padding else None
    rope = None if theta is None else rope_frequencies(D, T, theta)

    y, cache = ref.mha_forward(x, params, H, Hkv, causal, mask, rope)
    dx, grads = ref.mha_backward(dy, cache)
    assert list(grads) == list(params)

    m = fast_module(params, C, H, Hkv, bias, theta, dtype)
    xt = to_torch(x, True)
    yt = m(xt, None if mask is None else to_torch(mask), causal=causal)
    names = [name for name, _ in m.named_parameters()]
    assert sorted(names) == sorted(params)
    dxt, *grads_t = torch.autograd.grad(yt, (xt, *m.parameters()), to_torch(dy))

    tol = TOL[dtype]
    assert_close(y, yt, name="y", **tol)
    assert_close(dx, dxt, name="dx", **tol)
    for name, gt in zip(names, grads_t):
        assert_close(grads[name], gt, name=f"d{name}", **tol)
    if bias and theta is None:
        # softmax ignores a shift shared by a whole row, and b_k shifts row t by q_t . b_k: the
        # k bias gets no gradient (RoPE rotates b_k differently per position, which breaks this)
        scale = np.abs(grads["q_proj.bias"]).max() + 1
        assert_close(
            grads["k_proj.bias"], np.zeros_like(grads["k_proj.bias"]), rtol=0, atol=1e-4 * scale
        )


@given(seed=seeds)
@settings(max_examples=examples(4))
def test_mha_finite_differences(seed):
    rng = np.random.default_rng(seed)
    B, T, H, Hkv, D = 2, 3, 2, 1, 2
    params = make_params(rng, 3, H, Hkv, D, bias=True)  # C=3 != H*D=4: catches transposes
    x, dy = rng_array(rng, (B, T, 3)), rng_array(rng, (B, T, 3))
    mask = np.array([[False, True, True], [True, True, True]])
    rope = rope_frequencies(D, T, 10.0)
    forward = lambda: ref.mha_forward(x, params, H, Hkv, True, mask, rope)[0]
    dx, grads = ref.mha_backward(dy, ref.mha_forward(x, params, H, Hkv, True, mask, rope)[1])
    check_finite_differences(forward, {"x": x, **params}, {"x": dx, **grads}, dy)


@pytest.mark.parametrize("theta", [None, 100.0])
def test_causality_and_padding_in_both_trees(theta):
    rng = np.random.default_rng(1)
    B, T, C, H, Hkv = 2, 7, 12, 3, 1
    params = make_params(rng, C, H, Hkv, C // H, bias=True)
    m = fast_module(params, C, H, Hkv, True, theta, "float64")
    rope = None if theta is None else rope_frequencies(C // H, T, theta)
    mask = np.array([[False, False, True, True, True, True, True], [True] * T])

    def both(x):
        y_ref = ref.mha_forward(x, params, H, Hkv, True, mask, rope)[0]
        with torch.no_grad():
            y_fast = m(to_torch(x), to_torch(mask)).numpy()
        return y_ref, y_fast

    x = rng_array(rng, (B, T, C))
    base = both(x)
    # causality: changing tokens after position t leaves outputs up to t unchanged
    t = 3
    later = x.copy()
    later[:, t + 1 :] = rng_array(rng, (B, T - t - 1, C))
    for y0, y1 in zip(base, both(later)):
        assert_close(y1[:, : t + 1], y0[:, : t + 1], **TOL["float64"])
        assert (
            np.abs(y1[:, t + 1 :] - y0[:, t + 1 :]).max() > 1e-3
        )  # the change does reach later ones
    # padding: changing the padded tokens leaves every real token's output unchanged
    padded = x.copy()
    padded[0, :2] = rng_array(rng, (2, C), scale=10.0)
    for y0, y1 in zip(base, both(padded)):
        assert_close(y1[0, 2:], y0[0, 2:], **TOL["float64"])
        assert_close(y1[1], y0[1], **TOL["float64"])


def test_bf16_autocast_and_compile():
    torch.manual_seed(0)
    m = fast.MultiHeadAttention(32, 4, 2, rope_theta=10000.0, max_seq_len=16)
    x = torch.randn(2, 10, 32)
    mask = torch.ones(2, 10, dtype=torch.bool)
    mask[0, :3] = False
    exact = m(x, mask)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = m(x, mask)
    assert got.dtype == torch.bfloat16
    # bf16 rounds every matmul input to 8 mantissa bits (2**-8 ~ 4e-3 relative); three chained
    # projections plus the softmax compound to a few 1e-2 on outputs of size ~0.5
    assert_close(got.float(), exact, rtol=0, atol=5e-2, name="bf16 y")
    compiled = torch.compile(m, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x, mask), exact, rtol=1e-6, atol=1e-6, name="compiled y")


def test_bad_input():
    q, k = np.ones((2, 6, 3, 4)), np.ones((2, 4, 5, 4))
    qt, kt = torch.ones(2, 6, 3, 4), torch.ones(2, 4, 5, 4)
    with pytest.raises(ValueError, match="q heads=6 must be divisible by k/v heads=4"):
        ref.scaled_dot_product_attention_forward(q, k, k)
    with pytest.raises(ValueError, match="q heads=6 must be divisible by k/v heads=4"):
        fast.scaled_dot_product_attention(qt, kt, kt)
    k, kt = k[:, :2], kt[:, :2]
    with pytest.raises(ValueError, match=r"k: expected shape \(2, \*, \*, 4\), got \(2, 2, 5, 3\)"):
        ref.scaled_dot_product_attention_forward(q, k[..., :3], k[..., :3])
    with pytest.raises(ValueError, match=r"k: expected shape \(2, \*, \*, 4\), got \(2, 2, 5, 3\)"):
        fast.scaled_dot_product_attention(qt, kt[..., :3], kt[..., :3])
    with pytest.raises(
        ValueError, match=r"k and v must have the same shape, got \(2, 2, 5, 4\) and \(2, 2, 4, 4\)"
    ):
        ref.scaled_dot_product_attention_forward(q, k, k[:, :, :4])
    with pytest.raises(
        ValueError, match=r"k and v must have the same shape, got \(2, 2, 5, 4\) and \(2, 2, 4, 4\)"
    ):
        fast.scaled_dot_product_attention(qt, kt, kt[:, :, :4])
    with pytest.raises(
        ValueError, match=r"key_padding_mask: expected shape \(2, 5\), got \(2, 3\)"
    ):
        ref.scaled_dot_product_attention_forward(q, k, k, key_padding_mask=np.ones((2, 3), bool))
    with pytest.raises(
        ValueError, match=r"key_padding_mask: expected shape \(2, 5\), got \(2, 3\)"
    ):
        fast.scaled_dot_product_attention(
            qt, kt, kt, key_padding_mask=torch.ones(2, 3, dtype=torch.bool)
        )
    with pytest.raises(ValueError, match="key_padding_mask: expected dtype bool, got int64"):
        ref.scaled_dot_product_attention_forward(
            q, k, k, key_padding_mask=np.ones((2, 5), np.int64)
        )
    with pytest.raises(ValueError, match="key_padding_mask: expected dtype bool, got int64"):
        fast.scaled_dot_product_attention(
            qt, kt, kt, key_padding_mask=torch.ones(2, 5, dtype=torch.int64)
        )
    with pytest.raises(ValueError, match="k: expected dtype float64, got float32"):
        ref.scaled_dot_product_attention_forward(q, k.astype(np.float32), k)
    with pytest.raises(ValueError, match="k: expected dtype float32, got float64"):
        fast.scaled_dot_product_attention(qt, kt.double(), kt)
    with pytest.raises(ValueError, match="q: expected dtype .*, got int64"):
        ref.scaled_dot_product_attention_forward(q.astype(np.int64), k, k)
    with pytest.raises(ValueError, match="q: expected dtype .*, got int64"):
        fast.scaled_dot_product_attention(qt.long(), kt, kt)
    _, cache = ref.scaled_dot_product_attention_forward(q, k, k)
    with pytest.raises(
        ValueError, match=r"dout: expected shape \(2, 6, 3, 4\), got \(2, 6, 4, 3\)"
    ):
        ref.scaled_dot_product_attention_backward(np.ones((2, 6, 4, 3)), cache)

    rng = np.random.default_rng(0)
    params, x = make_params(rng, 8, 4, 2, 2, bias=False), np.ones((1, 3, 8))
    with pytest.raises(ValueError, match="n_heads=4 must be divisible by n_kv_heads=3"):
        ref.mha_forward(x, params, 4, 3)
    with pytest.raises(ValueError, match="n_heads=4 must be divisible by n_kv_heads=3"):
        fast.MultiHeadAttention(8, 4, 3)
    with pytest.raises(ValueError, match=r"k_proj.weight: expected shape \(8, 8\), got \(4, 8\)"):
        ref.mha_forward(x, params, 4, 4)
    with pytest.raises(ValueError, match="params: expected key 'o_proj.weight', got keys"):
        ref.mha_forward(x, {k: v for k, v in params.items() if k != "o_proj.weight"}, 4, 2)
    with pytest.raises(
        ValueError, match=r"params: expected keys among .*, got unknown \['q_proj.wieght'\]"
    ):
        ref.mha_forward(x, {**params, "q_proj.wieght": params["q_proj.weight"]}, 4, 2)
    with pytest.raises(ValueError, match="q_proj.weight: expected dtype float64, got float32"):
        ref.mha_forward(
            x, {**params, "q_proj.weight": params["q_proj.weight"].astype(np.float32)}, 4, 2
        )
    with pytest.raises(ValueError, match="d_model=10 must be divisible by n_heads=4"):
        fast.MultiHeadAttention(10, 4)
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 3"):
        fast.MultiHeadAttention(12, 4, rope_theta=10000.0)
    with pytest.raises(
        ValueError, match=r"x: expected size 8 in axis -1 \(d_model\), got shape \(1, 3, 6\)"
    ):
        fast.MultiHeadAttention(8, 4)(torch.ones(1, 3, 6))
    with pytest.raises(ValueError, match=r"x: expected a 3-D array, got shape \(3, 8\)"):
        ref.mha_forward(np.ones((3, 8)), params, 4, 2)
    _, cache = ref.mha_forward(x, params, 4, 2)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 3, 8\), got \(1, 8, 3\)"):
        ref.mha_backward(np.ones((1, 8, 3)), cache)

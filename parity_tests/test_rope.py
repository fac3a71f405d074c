"""RoPE: reference == fast (tables, forward, gradient), reference backward == finite differences,
and both == independent formulations (complex rotation of pairs, HF transformers' LLaMA code)."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast import rope as fast
from myllm101.reference import rope as ref
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

# small even sizes, and the head dims of real models (64: GPT-2 / SmolLM2, 128: LLaMA)
even_dim = st.one_of(st.integers(1, 12).map(lambda n: 2 * n), st.sampled_from([64, 128]))
thetas = st.sampled_from([10000.0, 500.0, 1e6])


@given(
    B=st.integers(1, 3),
    H=st.integers(1, 3),
    T=st.integers(1, 9),
    D=even_dim,
    offset=st.integers(0, 300),
    theta=thetas,
    dtype=dtypes,
    seed=seeds,
)
def test_forward_backward_match_torch(B, H, T, D, offset, theta, dtype, seed):
    rng = np.random.default_rng(seed)
    x = rng_array(rng, (B, H, T, D), dtype)
    dy = rng_array(rng, (B, H, T, D), dtype)
    cos, sin = ref.rope_frequencies(D, T, theta, offset)
    fcos, fsin = fast.rope_frequencies(D, T, theta, offset, dtype=TORCH_DTYPE[dtype])
    tol = TOL[dtype]
    assert_close(fcos, cos, name="cos", **tol)
    assert_close(fsin, sin, name="sin", **tol)

    y, cache = ref.rope_forward(x, cos, sin)
    dx = ref.rope_backward(dy, cache)
    assert y.dtype == dx.dtype == np.dtype(dtype)

    xt = to_torch(x, True)
    yt = fast.apply_rope(xt, fcos, fsin)
    (dxt,) = torch.autograd.grad(yt, (xt,), to_torch(dy))
    assert yt.dtype == TORCH_DTYPE[dtype]
    assert_close(y, yt, name="y", **tol)
    assert_close(dx, dxt, name="dx", **tol)


@pytest.mark.parametrize("offset", [0, 2000])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_realistic_size(dtype, offset):
    # head dim 64 over 128 positions, 12 heads, from the start and 2000 tokens into a KV cache.
    # Each output is two products and a sum (error ~2u |x|) and the tables are exact to ~u * the
    # angle: measured 5e-7 absolute on y in float32, 1.5e-12 in float64 at offset 2000, both
    # >= 100x inside TOL
    rng = np.random.default_rng(offset)
    x, dy = rng_array(rng, (2, 12, 128, 64), dtype), rng_array(rng, (2, 12, 128, 64), dtype)
    cos, sin = ref.rope_frequencies(64, 128, 10000.0, offset)
    fcos, fsin = fast.rope_frequencies(64, 128, 10000.0, offset, dtype=TORCH_DTYPE[dtype])
    assert_close(fcos, cos, name="cos", **TOL[dtype])
    assert_close(fsin, sin, name="sin", **TOL[dtype])
    y, cache = ref.rope_forward(x, cos, sin)
    xt = to_torch(x, True)
    yt = fast.apply_rope(xt, fcos, fsin)
    (dxt,) = torch.autograd.grad(yt, (xt,), to_torch(dy))
    assert_close(y, yt, name="y", **TOL[dtype])
    assert_close(ref.rope_backward(dy, cache), dxt, name="dx", **TOL[dtype])


def complex_rope(x: np.ndarray, theta: float, offset: int) -> np.ndarray:
    """Independent formulation: pair (x1[i], x2[i]) is the complex number x1[i] + 1j*x2[i], and
    position p multiplies it by exp(1j * p * theta**(-2i/D)). Built from its own loops."""
    D = x.shape[-1]
    half = D // 2
    z = x[..., :half] + 1j * x[..., half:]  # (..., T, D/2)
    rot = np.empty(z.shape[-2:], dtype=np.complex128)
    for t in range(z.shape[-2]):
        for i in range(half):
            rot[t, i] = np.exp(1j * (offset + t) / theta ** (2 * i / D))
    w = z * rot
    return np.concatenate([w.real, w.imag], axis=-1)


@given(T=st.integers(1, 7), D=even_dim, offset=st.integers(0, 50), theta=thetas, seed=seeds)
@settings(max_examples=examples(10))
def test_matches_complex_rotation(T, D, offset, theta, seed):
    x = rng_array(np.random.default_rng(seed), (2, 3, T, D))
    y, _ = ref.rope_forward(x, *ref.rope_frequencies(D, T, theta, offset))
    assert_close(y, complex_rope(x, theta, offset), name="y vs complex rotation", **TOL["float64"])


def test_matches_hf_transformers_llama():
    transformers = pytest.importorskip("transformers")
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

    D, T, offset, theta = 16, 12, 40, 500.0
    config = transformers.LlamaConfig(
        hidden_size=2 * D,
        num_attention_heads=2,
        head_dim=D,
        max_position_embeddings=128,
        rope_parameters={"rope_type": "default", "rope_theta": theta},
    )
    rng = np.random.default_rng(0)
    q, k = rng_array(rng, (2, 2, T, D)), rng_array(rng, (2, 1, T, D))
    cos, sin = ref.rope_frequencies(D, T, theta, offset)
    # HF's rotation applied to *our* tables: the convention must agree exactly
    hq, hk = apply_rotary_pos_emb(
        to_torch(q), to_torch(k), to_torch(cos)[None], to_torch(sin)[None]
    )
    assert_close(ref.rope_forward(q, cos, sin)[0], hq, name="q vs HF", **TOL["float64"])
    assert_close(ref.rope_forward(k, cos, sin)[0], hk, name="k vs HF", **TOL["float64"])
    # HF's tables: it forms the angles in float32, so positions ~50 carry ~50 * 6e-8 = 3e-6 of
    # angle error; 1e-5 absolute still catches a wrong frequency or layout (errors of order 1)
    hcos, hsin = LlamaRotaryEmbedding(config)(to_torch(q), torch.arange(offset, offset + T)[None])
    assert_close(hcos[0], cos, rtol=0, atol=1e-5, name="cos vs HF")
    assert_close(hsin[0], sin, rtol=0, atol=1e-5, name="sin vs HF")


@given(seed=seeds, offset=st.integers(0, 20))
@settings(max_examples=examples(10))
def test_scores_depend_only_on_relative_position(seed, offset):
    # the reason RoPE exists: <rope(q)_p, rope(k)_s> is a function of p - s, so shifting every
    # position by `offset` leaves all q.k scores unchanged; rotations also keep each vector's norm
    rng = np.random.default_rng(seed)
    T, D = 6, 8
    q, k = rng_array(rng, (1, 1, T, D)), rng_array(rng, (1, 1, T, D))
    at0 = ref.rope_frequencies(D, T, 100.0)
    shifted = ref.rope_frequencies(D, T, 100.0, offset)
    q0, k0 = ref.rope_forward(q, *at0)[0], ref.rope_forward(k, *at0)[0]
    q1, k1 = ref.rope_forward(q, *shifted)[0], ref.rope_forward(k, *shifted)[0]
    assert_close(q1 @ k1.swapaxes(-1, -2), q0 @ k0.swapaxes(-1, -2), rtol=1e-9, atol=1e-12)
    assert_close(np.linalg.norm(q1, axis=-1), np.linalg.norm(q, axis=-1), rtol=1e-12)
    if offset > 0:  # and the rotation is not the identity
        assert np.abs(q1 - q0).max() > 1e-3


@given(seed=seeds, D=st.sampled_from([2, 6]), offset=st.integers(0, 9))
@settings(max_examples=examples(8))
def test_finite_differences(seed, D, offset):
    rng = np.random.default_rng(seed)
    x, dy = rng_array(rng, (2, 2, 3, D)), rng_array(rng, (2, 2, 3, D))
    cos, sin = ref.rope_frequencies(D, 3, 10.0, offset)
    dx = ref.rope_backward(dy, ref.rope_forward(x, cos, sin)[1])
    check_finite_differences(lambda: ref.rope_forward(x, cos, sin)[0], {"x": x}, {"x": dx}, dy)


def test_rotary_embedding_module():
    D, max_len, theta = 8, 32, 1000.0
    m = fast.RotaryEmbedding(D, max_len, theta)
    assert m.state_dict() == {}  # tables are derived from the config, not learned
    q, k = torch.randn(2, 4, 5, D), torch.randn(2, 2, 5, D)
    rq, rk = m(q, k, offset=7)
    cos, sin = fast.rope_frequencies(D, 5, theta, offset=7)
    assert torch.equal(rq, fast.apply_rope(q, cos, sin))
    assert torch.equal(rk, fast.apply_rope(k, cos, sin))
    # .double() rebuilds the tables from float64: exactly the reference, not widened float32
    m = m.double()
    assert m.cos.dtype == torch.float64
    cos64, sin64 = ref.rope_frequencies(D, max_len, theta)
    assert_close(m.cos, cos64, rtol=0, atol=0, name="cos after .double()")
    assert_close(m.sin, sin64, rtol=0, atol=0, name="sin after .double()")


def test_positions_per_row():
    # position_ids (B, T): each row's cos/sin rows are gathered, (B, 1, T, D), and the one
    # apply_rope rotates with them; a row counting from 0 equals the shared (T, D) tables
    D, T = 8, 5
    m = fast.RotaryEmbedding(D, 32, 500.0).double()
    q, k = (
        torch.randn(3, 4, T, D, dtype=torch.float64),
        torch.randn(3, 2, T, D, dtype=torch.float64),
    )
    pos = torch.tensor([[0, 1, 2, 3, 4], [0, 0, 0, 1, 2], [7, 8, 9, 10, 11]])
    rq, rk = m(q, k, position_ids=pos)
    for b in range(3):
        cos, sin = ref.rope_frequencies(D, 32, 500.0)
        cos, sin = cos[pos[b].numpy()], sin[pos[b].numpy()]  # (T, D) rows of this batch row
        for name, x, rx in (("q", q, rq), ("k", k, rk)):
            y_ref = ref.rope_forward(x[b : b + 1].numpy(), cos, sin)[0]
            assert_close(rx[b : b + 1], y_ref, rtol=1e-15, atol=1e-15, name=f"{name} row {b}")
    same = torch.arange(2, 2 + T).expand(3, T)
    assert torch.equal(m(q, k, position_ids=same)[0], m(q, k, offset=2)[0])
    with pytest.raises(ValueError, match=r"position_ids: expected values in \[0, 32\)"):
        m(q, k, position_ids=pos + 25)
    with pytest.raises(ValueError, match=r"position_ids: expected shape \(3, 5\), got \(3, 4\)"):
        m(q, k, position_ids=pos[:, :4])
    with pytest.raises(ValueError, match=r"cos: expected shape \(3, 1, 5, 8\), got \(1, 1, 5, 8\)"):
        fast.apply_rope(q, m.cos[None, None, :T], m.sin[None, None, :T])


def test_bf16_and_compile():
    # bf16 keeps 8 mantissa bits (relative step 2**-8); y is one multiply-add of O(1) values, so a
    # few bf16 roundings of |x| ~ 3 bound the error
    x = torch.randn(2, 3, 16, 8)
    cos, sin = fast.rope_frequencies(8, 16)
    exact = fast.apply_rope(x, cos, sin)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = fast.apply_rope(x.bfloat16(), cos, sin)
    assert got.dtype == torch.bfloat16
    assert_close(got.float(), exact, rtol=2**-6, atol=2**-5, name="bf16 y")
    # torch.compile traces it without graph breaks (aot_eager: the graph capture, not C++ codegen)
    compiled = torch.compile(fast.apply_rope, backend="aot_eager", fullgraph=True)
    assert_close(compiled(x, cos, sin), exact, rtol=0, atol=0, name="compiled y")


def test_bad_input():
    cos, sin = ref.rope_frequencies(4, 3)
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 5"):
        ref.rope_frequencies(5, 3)
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 5"):
        fast.rope_frequencies(5, 3)
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 5"):
        fast.RotaryEmbedding(5, 8)
    with pytest.raises(ValueError, match="offset: expected a value >= 0, got -1"):
        ref.rope_frequencies(4, 3, offset=-1)
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 3"):
        ref.rope_forward(np.ones((1, 1, 3, 3)), cos[:, :3], sin[:, :3])
    with pytest.raises(ValueError, match="head_dim: expected an even size .*, got 3"):
        fast.apply_rope(torch.ones(1, 1, 3, 3), to_torch(cos[:, :3]), to_torch(sin[:, :3]))
    with pytest.raises(ValueError, match=r"cos: expected shape \(5, 4\), got \(3, 4\)"):
        ref.rope_forward(np.ones((1, 1, 5, 4)), cos, sin)
    with pytest.raises(ValueError, match=r"cos: expected shape \(5, 4\), got \(3, 4\)"):
        fast.apply_rope(torch.ones(1, 1, 5, 4), to_torch(cos), to_torch(sin))
    with pytest.raises(
        ValueError, match=r"cos and sin must have the same shape, got \(3, 4\) and \(2, 4\)"
    ):
        ref.rope_forward(np.ones((1, 1, 3, 4)), cos, sin[:2])
    with pytest.raises(
        ValueError, match=r"cos and sin must have the same shape, got \(3, 4\) and \(2, 4\)"
    ):
        fast.apply_rope(torch.ones(1, 1, 3, 4), to_torch(cos), to_torch(sin[:2]))
    with pytest.raises(ValueError, match=r"x: expected a 4-D array, got shape \(3, 4\)"):
        ref.rope_forward(np.ones((3, 4)), cos, sin)
    with pytest.raises(ValueError, match=r"x: expected a 4-D array, got shape \(3, 4\)"):
        fast.apply_rope(torch.ones(3, 4), to_torch(cos), to_torch(sin))
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        ref.rope_forward(np.ones((1, 1, 3, 4), dtype=np.int64), cos, sin)
    with pytest.raises(ValueError, match="x: expected dtype .*, got int64"):
        fast.apply_rope(torch.ones(1, 1, 3, 4, dtype=torch.int64), to_torch(cos), to_torch(sin))
    _, cache = ref.rope_forward(np.ones((1, 1, 3, 4)), cos, sin)
    with pytest.raises(ValueError, match=r"dy: expected shape \(1, 1, 3, 4\), got \(1, 1, 4, 3\)"):
        ref.rope_backward(np.ones((1, 1, 4, 3)), cache)
    m = fast.RotaryEmbedding(4, 8)
    with pytest.raises(ValueError, match="max_seq_len=8 .*got offset=6, seq_len=3"):
        m(torch.ones(1, 1, 3, 4), torch.ones(1, 1, 3, 4), offset=6)

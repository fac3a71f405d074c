"""Optimizers: the NumPy reference steps == torch.optim (AdamW, SGD), clipping == torch, and the
fast helpers (fused AdamW, param groups, accurate clipping)."""

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from myllm101.fast import optim as fast
from myllm101.reference import optim as ref
from parity_tests.helpers import TOL, assert_close, dtypes, rng_array, seeds

SHAPES = [(7, 5), (13,), (3, 4, 2)]  # a matrix, a vector (bias), an odd 3-D stack


def make_problem(seed, dtype, n_steps, shapes=SHAPES):
    rng = np.random.default_rng(seed)
    params = [rng_array(rng, s, dtype) for s in shapes]
    grads = [[rng_array(rng, s, dtype) for s in shapes] for _ in range(n_steps)]
    return params, grads


def torch_params(params):
    return [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in params]


def run_torch(opt, tparams, grad_seq):
    for grads in grad_seq:
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g.copy())
        opt.step()


# 20 AdamW steps accumulate ~20 roundings per element, each ~1e-16 relative in float64: 1e-10 is
# the brief's bound; float32 uses the shared table (steps are ~lr, far above float32 rounding).
STEP_TOL = {"float64": dict(rtol=1e-10, atol=1e-12), "float32": TOL["float32"]}


@given(
    seed=seeds,
    dtype=dtypes,
    lr=st.floats(1e-4, 1e-1),
    b1=st.floats(0.0, 0.99),
    b2=st.floats(0.5, 0.9999),
    weight_decay=st.floats(0.0, 0.5),
    fused=st.booleans(),
)
def test_adamw_matches_torch(seed, dtype, lr, b1, b2, weight_decay, fused):
    params, grad_seq = make_problem(seed, dtype, 20)
    tparams = torch_params(params)
    kw = dict(lr=lr, betas=(b1, b2), eps=1e-8, weight_decay=weight_decay)
    opt_ref = ref.AdamW(params, **kw)
    # fused (one kernel) and foreach (multi-tensor) are torch's two fast paths; both must match
    opt = fast.make_adamw(tparams, **kw, fused=fused)
    assert opt.defaults["fused"] == fused
    for grads in grad_seq:
        opt_ref.step(grads)
    run_torch(opt, tparams, grad_seq)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp, name=f"params[{i}]", **STEP_TOL[dtype])
        state = opt.state[tp]
        assert_close(opt_ref.m[i], state["exp_avg"], name=f"exp_avg[{i}]", **STEP_TOL[dtype])
        assert_close(opt_ref.v[i], state["exp_avg_sq"], name=f"exp_avg_sq[{i}]", **STEP_TOL[dtype])
    assert opt_ref.t == 20


def test_adamw_against_plain_torch_and_updates_in_place():
    # the brief's check, against torch.optim.AdamW built directly (default for-loop/foreach path)
    params, grad_seq = make_problem(0, "float64", 20)
    ids = [id(p) for p in params]
    before = [p.copy() for p in params]
    tparams = torch_params(params)
    opt = torch.optim.AdamW(tparams, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    opt_ref = ref.AdamW(params, lr=1e-2, betas=(0.8, 0.99), weight_decay=0.1)
    for grads in grad_seq:
        opt_ref.step(grads)
    run_torch(opt, tparams, grad_seq)
    assert [id(p) for p in opt_ref.params] == ids  # the caller's arrays, updated in place
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert not np.allclose(p, before[i])
        assert_close(p, tp, rtol=1e-10, atol=1e-12, name=f"params[{i}]")


@given(
    seed=seeds,
    dtype=dtypes,
    momentum=st.sampled_from([0.0, 0.5, 0.9]),
    weight_decay=st.sampled_from([0.0, 0.01]),
    fused=st.booleans(),
)
def test_sgd_matches_torch(seed, dtype, momentum, weight_decay, fused):
    params, grad_seq = make_problem(seed, dtype, 10)
    tparams = torch_params(params)
    opt_ref = ref.SGD(params, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    if fused:
        opt = fast.make_sgd(tparams, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(tparams, lr=0.05, momentum=momentum, weight_decay=weight_decay)
    for grads in grad_seq:
        opt_ref.step(grads)
    run_torch(opt, tparams, grad_seq)
    for i, (p, tp) in enumerate(zip(params, tparams)):
        assert_close(p, tp, name=f"params[{i}]", **STEP_TOL[dtype])


@pytest.mark.parametrize("kind", ["adamw", "sgd"])
def test_state_dict_round_trip(kind):
    # 5 steps, save, 5 more; a fresh optimizer loading the saved state must take the same 5 steps
    params, grad_seq = make_problem(1, "float64", 10)
    make = {
        "adamw": lambda ps: ref.AdamW(ps, lr=1e-2),
        "sgd": lambda ps: ref.SGD(ps, lr=1e-2, momentum=0.9),
    }[kind]
    opt = make(params)
    for grads in grad_seq[:5]:
        opt.step(grads)
    saved, params_saved = opt.state_dict(), [p.copy() for p in params]
    for grads in grad_seq[5:]:
        opt.step(grads)
    resumed = make(params_saved)
    resumed.load_state_dict(saved)
    for grads in grad_seq[5:]:
        resumed.step(grads)
    for a, b in zip(params, params_saved):
        assert np.array_equal(a, b)
    # state_dict holds copies: the steps taken after saving did not change what was saved
    key = "exp_avg" if kind == "adamw" else "momentum_buffers"
    assert not np.array_equal(saved[key][0], opt.state_dict()[key][0])


@given(seed=seeds, dtype=dtypes, max_norm=st.floats(0.1, 100.0))
def test_clip_grad_norm_matches_torch(seed, dtype, max_norm):
    _, (grads,) = make_problem(seed, dtype, 1)
    clipped, norm = ref.clip_grad_norm(grads, max_norm)
    for name, clip in (("torch", torch.nn.utils.clip_grad_norm_), ("fast", fast.clip_grad_norm)):
        tparams = torch_params(grads)
        for p, g in zip(tparams, grads):
            p.grad = torch.from_numpy(g.copy())
        tnorm = clip(tparams, max_norm)
        assert_close(norm, tnorm, name=f"{name} norm", **TOL[dtype])
        for i, (c, tp) in enumerate(zip(clipped, tparams)):
            assert_close(c, tp.grad, name=f"{name} clipped[{i}]", **TOL[dtype])
    # the result really is clipped (or untouched when already small)
    new_norm = np.sqrt(sum(np.sum(c.astype(np.float64) ** 2) for c in clipped))
    assert new_norm <= max_norm * (1 + 1e-5)
    if norm < max_norm:
        for c, g in zip(clipped, grads):
            assert_close(c, g, rtol=1e-6, atol=0, name="unclipped")


def test_clip_grad_norm_accurate_on_long_float32():
    # 2M float32 values: torch's CPU norm kernel drifts here (float32 lanes over long runs);
    # the reference (NumPy pairwise sum) and fast.grad_norm stay within float32 rounding of float64
    g = np.random.default_rng(0).standard_normal(2_000_003).astype(np.float32)
    exact = np.sqrt(np.sum(g.astype(np.float64) ** 2))
    _, norm_ref = ref.clip_grad_norm([g], 1.0)
    norm_fast = fast.grad_norm([torch.from_numpy(g)])
    assert_close(norm_ref, exact, rtol=1e-6, name="reference norm")
    assert_close(norm_fast, exact, rtol=1e-6, name="fast norm")


def test_param_groups_and_make_adamw():
    model = torch.nn.Sequential(
        torch.nn.Embedding(10, 8), torch.nn.Linear(8, 8), torch.nn.LayerNorm(8)
    )
    model[0].weight.requires_grad_(False)  # frozen: left out
    groups = fast.param_groups(model, weight_decay=0.1)
    decay, no_decay = groups
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert [p.shape for p in decay["params"]] == [(8, 8)]
    assert sorted(p.numel() for p in no_decay["params"]) == [8, 8, 8]
    opt = fast.make_adamw(groups, lr=1e-3)
    assert opt.defaults["fused"]  # CPU float tensors have the fused kernel
    assert [g["weight_decay"] for g in opt.param_groups] == [0.1, 0.0]
    x = torch.randint(0, 10, (4,))
    (model(x) ** 2).sum().backward()  # (a plain sum through LayerNorm has zero gradient)
    bias_before = model[1].bias.detach().clone()
    opt.step()
    assert not torch.equal(model[1].bias, bias_before)


def test_bad_input():
    p = [np.ones((2, 3))]
    with pytest.raises(ValueError, match=r"lr: expected a value in \[0.0, inf\), got -0.1"):
        ref.AdamW(p, lr=-0.1)
    with pytest.raises(ValueError, match=r"lr: expected a value in \[0.0, inf\), got -0.1"):
        ref.SGD(p, lr=-0.1)
    with pytest.raises(ValueError, match=r"lr: expected a value in \[0.0, inf\), got -0.1"):
        fast.make_adamw([torch.nn.Parameter(torch.ones(2))], lr=-0.1)
    with pytest.raises(ValueError, match=r"betas\[0\]: expected a value in \[0.0, 1.0\), got 1.0"):
        ref.AdamW(p, betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"betas\[1\]: expected a value in \[0.0, 1.0\), got -0.5"):
        fast.make_adamw([torch.nn.Parameter(torch.ones(2))], betas=(0.9, -0.5))
    with pytest.raises(ValueError, match=r"momentum: expected a value in \[0.0, inf\), got -1"):
        fast.make_sgd([torch.nn.Parameter(torch.ones(2))], lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="params\\[0\\]: expected dtype .*, got int64"):
        ref.SGD([np.ones(3, np.int64)], lr=0.1)
    for opt in (ref.AdamW(p), ref.SGD(p, lr=0.1, momentum=0.9)):
        with pytest.raises(ValueError, match="grads: expected 1 arrays .*, got 2"):
            opt.step([np.ones((2, 3)), np.ones(2)])
        with pytest.raises(
            ValueError, match=r"params\[0\] and grads\[0\] .* got \(2, 3\) and \(3, 2\)"
        ):
            opt.step([np.ones((3, 2))])
    with pytest.raises(ValueError, match=r"exp_avg: expected 1 arrays .*, got 0"):
        ref.AdamW(p).load_state_dict({**ref.AdamW(p).state_dict(), "exp_avg": []})
    with pytest.raises(ValueError, match="max_norm: expected a positive value, got 0"):
        ref.clip_grad_norm(p, 0)
    with pytest.raises(ValueError, match="max_norm: expected a positive value, got -1"):
        fast.clip_grad_norm([torch.nn.Parameter(torch.ones(2))], -1)

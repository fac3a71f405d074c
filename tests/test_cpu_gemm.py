"""fast/cpu_gemm.py: a float32 training Linear's three GEMMs by MKL or oneDNN compute the float64
product to float32 rounding; ``auto`` keeps the library that times faster per key (a fake clock
forces each side); ``aten`` is F.linear bit for bit; only float32 CPU products autograd records go
there; models train the same under every policy."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from myllm101.fast import cpu_gemm
from myllm101.fast.gpt import GPT
from myllm101.fast.linear import Linear, linear
from myllm101.fast.llama import Llama
from parity_tests.helpers import examples, seeds
from parity_tests.test_generate import gpt_cfg, llama_cfg

pytestmark = pytest.mark.skipif(
    not torch.backends.mkldnn.is_available(), reason="this torch build has no oneDNN"
)


@pytest.fixture(autouse=True)
def _policy_restored():
    yield
    cpu_gemm.set_mode(None)


def _routed(grad_fn) -> bool:
    """Did the product go through cpu_gemm's autograd Function?"""
    return type(grad_fn).__name__ == "_TrainLinearBackward"


def _grads(x, w, b, dy, fn):
    leaves = [t.clone().requires_grad_() if t is not None else None for t in (x, w, b)]
    y = fn(*leaves)
    y.backward(dy)
    return y.detach(), [t.grad if t is not None else None for t in leaves], y.grad_fn


def _case(seed, lead, n_in, n_out, bias, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed % 2**31)
    x = torch.randn(*lead, n_in, generator=g, dtype=dtype)
    w = torch.randn(n_out, n_in, generator=g, dtype=dtype)
    b = torch.randn(n_out, generator=g, dtype=dtype) if bias else None
    dy = torch.randn(*lead, n_out, generator=g, dtype=dtype)
    return x, w, b, dy


@settings(max_examples=examples(25), deadline=None)
@given(seed=seeds, lead=st.lists(st.integers(1, 9), min_size=1, max_size=2),
       n_in=st.integers(1, 70), n_out=st.integers(1, 70), bias=st.booleans(),
       mode=st.sampled_from(["onednn", "auto"]))  # fmt: skip
def test_train_linear_is_the_float64_product_to_float32_rounding(
    seed, lead, n_in, n_out, bias, mode
):
    cpu_gemm.set_mode(mode)
    x, w, b, dy = _case(seed, lead, n_in, n_out, bias)
    y, grads, grad_fn = _grads(x, w, b, dy, linear)
    assert _routed(grad_fn)
    want_y, want, _ = _grads(*(t.double() if t is not None else None for t in (x, w, b, dy)),
                             F.linear)  # fmt: skip
    assert y.shape == (*lead, n_out) and y.dtype == torch.float32
    # float32 sums of n terms: |error| <= ~n * 6e-8 * (sum of |terms|); 2e-6 sqrt(n) is ample
    # for random signs and still fails a wrong operand or transpose (errors of order 1)
    for got, ref, a, c, n in [
        (y, want_y, x, w.T, n_in),
        (grads[0], want[0], dy, w, n_out),
        (grads[1], want[1], dy.reshape(-1, n_out).T, x.reshape(-1, n_in), x.numel() // n_in),
    ]:
        scale = (a.abs().double() @ c.abs().double()).max().item() + 1e-30
        assert (got.double() - ref).abs().max().item() <= 2e-6 * max(n, 8) ** 0.5 * scale
    if bias:
        torch.testing.assert_close(grads[2].double(), want[2], rtol=1e-5, atol=1e-5)


def test_aten_policy_is_f_linear_bit_for_bit(monkeypatch):
    monkeypatch.setenv(cpu_gemm.ENV_VAR, "aten")
    x, w, b, dy = _case(0, (4, 33), 40, 50, True)
    got = _grads(x, w, b, dy, linear)
    want = _grads(x, w, b, dy, F.linear)
    assert not _routed(got[2])
    assert torch.equal(got[0], want[0])
    assert all(torch.equal(g, h) for g, h in zip(got[1], want[1]))


@pytest.mark.parametrize("faster", ["aten", "onednn"])
def test_auto_keeps_the_library_the_clock_finds_faster(monkeypatch, faster):
    """A fake clock that charges the slower library 3 units a call and the faster 1: every key
    gets ``faster``; each key is timed once; the products stay right either way."""
    cpu_gemm.set_mode("auto")
    now = [0.0]
    calls = {"aten": 0, "onednn": 0}
    real = dict(cpu_gemm._LIBRARIES)

    def charged(lib):
        def run(x, w, b):
            calls[lib] += 1
            now[0] += 1.0 if lib == faster else 3.0
            return real[lib](x, w, b)

        return run

    monkeypatch.setattr(cpu_gemm, "clock", lambda: now[0])
    monkeypatch.setattr(cpu_gemm, "_LIBRARIES", {lib: charged(lib) for lib in real})
    x, w, b, dy = _case(1, (300,), 260, 270, True)  # 2 M N K > MIN_FLOPS
    y, grads, _ = _grads(x, w, b, dy, linear)
    timed = 1 + cpu_gemm.TIMED_CALLS  # per library and key: warm-up + timed calls
    assert cpu_gemm.choices() == {
        "dw 512x260x300": faster, "dx 512x260x270": faster, "forward 512x270x260": faster,
    }  # fmt: skip
    assert calls == {lib: 3 * timed + (3 if lib == faster else 0) for lib in calls}
    y2, grads2, _ = _grads(x, w, b, dy, linear)  # chosen already: one call per GEMM, no timing
    assert calls == {lib: 3 * timed + (6 if lib == faster else 0) for lib in calls}
    want_y, want, _ = _grads(x, w, b, dy, F.linear)
    torch.testing.assert_close(y, want_y, rtol=1e-5, atol=1e-4)
    for g, h in zip(grads, want):
        torch.testing.assert_close(g, h, rtol=1e-5, atol=1e-3)  # sums of 300 terms ~ 17


def test_auto_leaves_small_gemms_on_aten_untimed(monkeypatch):
    cpu_gemm.set_mode("auto")
    monkeypatch.setattr(cpu_gemm, "clock", lambda: pytest.fail("a small GEMM was timed"))
    x, w, b, dy = _case(2, (8,), 32, 16, False)
    _, grads, grad_fn = _grads(x, w, b, dy, linear)
    assert _routed(grad_fn) and cpu_gemm.choices() == {}
    assert grads[2] is None


def test_rows_are_bucketed_by_powers_of_two():
    assert [cpu_gemm._bucket(m) for m in (1, 2, 3, 64, 65, 2048, 2049)] == [
        1, 2, 4, 64, 128, 2048, 4096,
    ]  # fmt: skip


def test_only_recorded_float32_cpu_products_are_routed(monkeypatch):
    cpu_gemm.set_mode("onednn")
    w = torch.randn(5, 4, requires_grad=True)
    x = torch.randn(3, 4)
    assert cpu_gemm.routes(x, w) and cpu_gemm.routes(x.requires_grad_(), w.detach())
    assert not cpu_gemm.routes(x.detach(), w.detach())  # nothing to differentiate
    with torch.no_grad():
        assert not cpu_gemm.routes(x, w)
    with torch.inference_mode():
        assert not cpu_gemm.routes(x, w)
    assert not cpu_gemm.routes(x.double(), w.double())  # float64 stays on F.linear
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert not cpu_gemm.routes(x, w)
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: False)
    assert not cpu_gemm.routes(x, w)
    monkeypatch.undo()
    cpu_gemm.set_mode("aten")
    assert not cpu_gemm.routes(x, w)


def test_choices_round_trip_and_bad_ones_name_themselves():
    cpu_gemm.set_mode("auto")
    saved = {"dw 512x384x2048": "aten", "forward 2048x1152x384": "onednn"}
    cpu_gemm.restore_choices(saved)
    assert cpu_gemm.choices() == saved
    for bad in ({"fwd 2x3x4": "aten"}, {"dx 2x3x4": "mkl"}, {"dx 2x3": "aten"}):
        with pytest.raises(ValueError, match="cpu_gemm choices: expected 'GEMM MxNxK'"):
            cpu_gemm.restore_choices(bad)
    with pytest.raises(ValueError, match="expected integer sizes, got 'dx 2xax4'"):
        cpu_gemm.restore_choices({"dx 2xax4": "aten"})


def test_a_bad_policy_names_itself(monkeypatch):
    with pytest.raises(ValueError, match="set_mode: expected one of auto, aten, onednn, got 'mkl'"):
        cpu_gemm.set_mode("mkl")
    monkeypatch.setenv(cpu_gemm.ENV_VAR, "fast")
    with pytest.raises(ValueError, match="MYLLM101_CPU_GEMM: expected one of .*'fast'"):
        linear(torch.randn(2, 3), torch.randn(4, 3, requires_grad=True))


@pytest.mark.parametrize("make", [lambda: GPT(gpt_cfg()), lambda: Llama(llama_cfg())],
                         ids=["gpt", "llama"])  # fmt: skip
def test_models_train_alike_under_every_policy(make):
    """One loss and gradient per policy from the same weights and tokens (the GPT's head is tied to
    its embedding: two gradients summed into one Parameter)."""
    torch.manual_seed(0)
    model = make().train()
    ids = torch.randint(0, model.cfg.vocab_size, (3, 12))
    results = {}
    for mode in ("aten", "onednn"):
        cpu_gemm.set_mode(mode)
        model.zero_grad(set_to_none=True)
        loss = model(ids, labels=ids).loss
        loss.backward()
        results[mode] = loss.item(), {n: p.grad.clone() for n, p in model.named_parameters()}
    (loss_a, grads_a), (loss_o, grads_o) = results["aten"], results["onednn"]
    assert loss_o == pytest.approx(loss_a, rel=1e-5)
    for name, g in grads_a.items():  # float32 through a few layers: 1e-4 of the largest entry
        torch.testing.assert_close(grads_o[name], g, rtol=1e-4, atol=1e-4 * g.abs().max().item())


def test_linear_module_routes_while_training():
    cpu_gemm.set_mode("onednn")
    layer = Linear(6, 7)
    out = layer(torch.randn(2, 6))
    assert _routed(out.grad_fn)
    with torch.no_grad():
        assert layer(torch.randn(2, 6)).grad_fn is None


def test_a_compiled_step_keeps_torch_compiles_own_gemms(monkeypatch):
    """torch.compile traces F.linear, not the Function (measured no faster routed, see the module
    docstring): one graph, no break, neither library called from here, gradients as eager's."""
    cpu_gemm.set_mode("onednn")
    calls = []
    for lib, real in dict(cpu_gemm._LIBRARIES).items():
        monkeypatch.setitem(cpu_gemm._LIBRARIES, lib, lambda *a, r=real: calls.append(1) or r(*a))
    x, w1, b1, _ = _case(3, (2, 5), 8, 16, True)
    w2 = torch.randn(4, 16, generator=torch.Generator().manual_seed(4))

    def loss(x, w1, b1, w2, f):
        return f(F.gelu(f(x, w1, b1)), w2, None).square().sum()

    leaves = [t.clone().requires_grad_() for t in (x, w1, b1, w2)]
    torch.compile(loss, fullgraph=True)(*leaves, linear).backward()
    assert calls == []
    want = [t.clone().requires_grad_() for t in (x, w1, b1, w2)]
    loss(*want, linear).backward()  # eager: through cpu_gemm
    assert len(calls) == 2 + 4  # two forward GEMMs; dx and dW of each (x's grad is wanted)
    for got, ref in zip(leaves, want):  # float32 (Inductor's GELU too): 1e-5 of the largest entry
        scale = ref.grad.abs().max().item()
        torch.testing.assert_close(got.grad, ref.grad, rtol=1e-5, atol=1e-5 * scale)

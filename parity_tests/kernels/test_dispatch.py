"""When fast/ calls a Triton kernel: MYLLM101_KERNELS / kernels= (auto | on | off), and the GPU script."""

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from myllm101.fast import int8 as fast_int8
from myllm101.fast import rmsnorm as fast_rmsnorm
from myllm101.fast import rope as fast_rope
from myllm101.kernels import dispatch
from parity_tests.helpers import assert_close
from parity_tests.kernels import DEVICE, requires_kernels

ROOT = Path(__file__).resolve().parents[2]


def test_mode_from_env_and_argument(monkeypatch):
    monkeypatch.delenv("MYLLM101_KERNELS", raising=False)
    assert dispatch.kernels_mode() == "auto"
    monkeypatch.setenv("MYLLM101_KERNELS", "OFF")
    assert dispatch.kernels_mode() == "off"
    assert dispatch.kernels_mode("on") == "on"  # the argument wins over the env var
    monkeypatch.setenv("MYLLM101_KERNELS", "fast")
    with pytest.raises(
        ValueError, match=r"MYLLM101_KERNELS: expected one of auto, on, off, got 'fast'"
    ):
        dispatch.kernels_mode()
    with pytest.raises(ValueError, match=r"kernels: expected one of auto, on, off, got 'yes'"):
        dispatch.use_kernel(kernels="yes")


def test_use_kernel_rules(monkeypatch):
    monkeypatch.delenv("MYLLM101_KERNELS", raising=False)
    x = torch.zeros(2)
    assert dispatch.use_kernel(x, kernels="off") is False
    assert dispatch.use_kernel(x) is False  # auto: CPU tensor -> eager
    assert dispatch.use_kernel(x, None, kernels="auto") is False
    assert dispatch.use_kernel(kernels="auto") is False  # nothing on CUDA to judge by
    assert dispatch.use_kernel(x, kernels="on") is dispatch.triton_available()
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert dispatch.interpreting() is True
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert dispatch.interpreting() is False


def test_missing_triton_gives_a_clear_error(monkeypatch):
    monkeypatch.setattr(dispatch, "triton_available", lambda: False)
    x = torch.zeros(2, 4)
    with pytest.raises(ValueError, match=r"expected the 'triton' package to be importable"):
        dispatch.use_kernel(x, kernels="on")
    with pytest.raises(ValueError, match=r"'triton'"):
        fast_rmsnorm.rmsnorm(x, torch.ones(4), kernels="on")
    monkeypatch.setenv("MYLLM101_KERNELS", "on")
    with pytest.raises(ValueError, match=r"'triton'"):
        fast_int8.int8_matmul(
            torch.zeros(2, 4, dtype=torch.int8), torch.zeros(3, 4, dtype=torch.int8)
        )
    monkeypatch.setenv("MYLLM101_KERNELS", "auto")  # auto quietly stays eager
    assert dispatch.use_kernel(x) is False
    assert fast_rmsnorm.rmsnorm(x, torch.ones(4)).shape == (2, 4)


def test_off_never_touches_triton():
    # a fresh interpreter where `import triton` fails: off and auto (CPU) still run every fast op
    code = textwrap.dedent(
        """
        import sys
        sys.modules["triton"] = None  # any `import triton` now raises ImportError
        import torch
        import myllm101.kernels
        from myllm101.fast import int8, rmsnorm, rope
        x = torch.randn(2, 3, 5, 8)
        cos, sin = rope.rope_frequencies(8, 5)
        for mode in ("off", "auto"):
            rmsnorm.rmsnorm(x, torch.ones(8), kernels=mode)
            rope.apply_rope(x, cos, sin, kernels=mode)
            q = torch.ones(4, 8, dtype=torch.int8)
            int8.int8_matmul(q, q, kernels=mode)
            int8.w8a8_linear(x, q, torch.ones(4), kernels=mode)
        assert not myllm101.kernels.triton_available()
        assert not any(m.startswith("myllm101.kernels.") and m != "myllm101.kernels.dispatch"
                       for m in sys.modules), "a kernel module was imported"
        print("ok")
        """
    )
    env = {**os.environ, "MYLLM101_KERNELS": "off"}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]


def _spy_kernels(monkeypatch):
    """Replace the kernel entry points by counting wrappers; returns the call log."""
    import myllm101.kernels.int8_matmul as k_int8
    import myllm101.kernels.rmsnorm as k_rms
    import myllm101.kernels.rope as k_rope

    calls = []
    for mod, name in [
        (k_rms, "rmsnorm"),
        (k_rope, "apply_rope"),
        (k_int8, "int8_matmul"),
        (k_int8, "int8_linear_rescale"),
    ]:
        real = getattr(mod, name)
        monkeypatch.setattr(
            mod, name, lambda *a, real=real, name=name: calls.append(name) or real(*a)
        )
    return calls


def _run_fast_ops(device):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 5, 8, device=device)
    cos, sin = fast_rope.rope_frequencies(8, 5, device=device)
    q = torch.randint(-127, 128, (4, 8), dtype=torch.int8, device=device)
    return [
        fast_rmsnorm.RMSNorm(8).to(device)(x),
        fast_rope.apply_rope(x, cos, sin),
        fast_int8.int8_matmul(q, q),
        fast_int8.w8a8_linear(x, q, torch.rand(4, device=device)),
    ]


@requires_kernels
def test_auto_on_cpu_falls_back_and_on_runs_the_kernels(monkeypatch):
    calls = _spy_kernels(monkeypatch)
    monkeypatch.setenv("MYLLM101_KERNELS", "auto")
    eager = _run_fast_ops("cpu")
    assert calls == [], "auto must not run kernels on CPU tensors"
    monkeypatch.setenv("MYLLM101_KERNELS", "on")
    with_kernels = _run_fast_ops(DEVICE)
    assert calls == ["rmsnorm", "apply_rope", "int8_matmul", "int8_linear_rescale"]
    for name, a, b in zip(["rmsnorm", "rope", "int8_matmul", "w8a8"], with_kernels, eager):
        if a.dtype == torch.int32:
            assert torch.equal(a.cpu(), b), name
        else:
            assert_close(a, b, rtol=1e-5, atol=1e-5, name=f"{name}: on vs auto")


def test_gpu_benchmark_without_gpu_exits_cleanly():
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}  # no GPU, even on a machine with one
    res = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr[-2000:]
    assert "needs a CUDA GPU" in res.stdout

"""device.py: what counts as native bf16 / int8 on a CPU, and the choices made from it.

Every branch is forced (synthetic CPU flags, or the MYLLM101_NATIVE_* overrides), so these tests
pass the same way on an AVX2-only CPU and on an AVX-512 one.
"""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from myllm101 import device
from myllm101.train import TrainConfig, Trainer

AVX2_ONLY = {"avx2": True, "avx512_f": False, "avx512_bf16": False, "avx512_vnni": False}
ZEN4 = {"avx2": True, "avx512_f": True, "avx512_bf16": True, "avx512_vnni": True}
SAPPHIRE_RAPIDS = {**ZEN4, "amx_bf16": True, "amx_int8": True}
ALDER_LAKE = {**AVX2_ONLY, "avx_vnni": True}


@pytest.fixture(autouse=True)
def no_overrides(monkeypatch):
    monkeypatch.delenv(device.BF16_ENV, raising=False)
    monkeypatch.delenv(device.INT8_ENV, raising=False)
    monkeypatch.setattr(device, "_warned", set())


@pytest.mark.parametrize(
    "flags, capability, onednn, native",
    [
        (AVX2_ONLY, "AVX2", False, False),
        (ZEN4, "AVX512", True, True),
        (ZEN4, "AVX2", True, False),  # ATEN_CPU_CAPABILITY=avx2: torch's kernels are AVX2 ones
        (ZEN4, "AVX512", False, False),  # oneDNN capped below AVX512-BF16 (ONEDNN_MAX_CPU_ISA)
        (SAPPHIRE_RAPIDS, "AVX512", True, True),
        ({}, "DEFAULT", False, False),  # flags unknown: never assume
    ],
)
def test_native_bf16_from_cpu_flags(flags, capability, onednn, native):
    got, why = device._native_bf16(flags, capability, onednn)
    assert got is native
    assert why  # always says why


@pytest.mark.parametrize(
    "flags, capability, native",
    [
        (AVX2_ONLY, "AVX2", False),
        (ZEN4, "AVX512", True),
        (ZEN4, "AVX2", False),
        (SAPPHIRE_RAPIDS, "AVX2", True),  # AMX-INT8 does not depend on torch's AVX-512 kernels
        (ALDER_LAKE, "AVX2", True),
    ],
)
def test_native_int8_from_cpu_flags(flags, capability, native):
    assert device._native_int8(flags, capability)[0] is native


def test_hardware_describes_this_machine():
    hw = device.hardware()
    assert hw.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert hw.torch_version == torch.__version__ and hw.threads == torch.get_num_threads()
    line = hw.summary()
    for part in (hw.cpu_name, hw.cpu_capability, "native bf16", "native int8", "threads"):
        assert part in line


def test_overrides_force_each_branch(monkeypatch):
    for value, native in (("0", False), ("1", True)):
        monkeypatch.setenv(device.BF16_ENV, value)
        monkeypatch.setenv(device.INT8_ENV, value)
        hw = device.hardware()
        assert hw.native_bf16 is native and hw.native_int8 is native
        assert "forced by MYLLM101_NATIVE_BF16" in hw.bf16_why
        assert device.int8_matmul_backend("cpu") == ("int_mm" if native else "fp32_exact")
    monkeypatch.setenv(device.BF16_ENV, "maybe")
    with pytest.raises(ValueError, match="MYLLM101_NATIVE_BF16: expected 0 or 1, got 'maybe'"):
        device.hardware()


def test_train_dtype_choice(monkeypatch, capsys):
    monkeypatch.setenv(device.BF16_ENV, "1")
    assert device.choose_train_dtype("auto", "cpu").value == "bf16"
    monkeypatch.setenv(device.BF16_ENV, "0")
    choice = device.choose_train_dtype("auto", "cpu")
    assert choice.value == "float32" and choice.reason.startswith("auto: float32, since")
    assert capsys.readouterr().err == ""
    # an explicit bf16 where it is emulated still runs, with one warning line (once)
    assert device.choose_train_dtype("bf16", "cpu").value == "bf16"
    assert device.choose_train_dtype("bf16", "cpu").value == "bf16"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "warning: dtype bf16 on this CPU will be slow" in err
    assert device.choose_train_dtype("float64", "cpu").value == "float64"


@pytest.mark.parametrize("cuda_bf16, expected", [(True, "bf16"), (False, "fp16")])
def test_train_dtype_choice_on_cuda(monkeypatch, cuda_bf16, expected):
    hw = replace(device.hardware(), cuda_device="some GPU", cuda_bf16=cuda_bf16)
    monkeypatch.setattr(device, "hardware", lambda: hw)
    assert device.choose_train_dtype("auto", "cuda").value == expected
    assert device.choose_inference_dtype("auto", "cuda").value == ("bf16" if cuda_bf16 else "fp32")
    assert device.int8_matmul_backend("cuda") == "int_mm"


def test_inference_dtype_choice(monkeypatch):
    for value, expected in (("1", "bf16"), ("0", "fp32")):
        monkeypatch.setenv(device.BF16_ENV, value)
        assert device.choose_inference_dtype("auto").value == expected
        assert device.choose_inference_dtype("fp32").value == "fp32"
    with pytest.raises(ValueError, match="dtype: expected auto, fp32 or bf16, got 'fp16'"):
        device.choose_inference_dtype("fp16")


@pytest.mark.parametrize("native, kind, autocast", [("0", "float32", None),
                                                    ("1", "bf16", torch.bfloat16)])  # fmt: skip
def test_trainer_auto_dtype_follows_the_cpu_and_says_so(tmp_path, monkeypatch, capsys,
                                                         native, kind, autocast):  # fmt: skip
    monkeypatch.setenv(device.BF16_ENV, native)
    tokens = np.random.default_rng(0).integers(0, 97, size=2000)
    cfg = TrainConfig(
        out_dir=str(tmp_path / "run"), model={"preset": "gpt-tiny"}, seq_len=16, batch_size=2,
        max_steps=2, warmup_steps=1, eval_interval=100, eval_batches=1, save_interval=100,
        dtype="auto", progress=True, log_interval=1,
    )  # fmt: skip
    trainer = Trainer(cfg, tokens, tokens)
    assert trainer.dtype_kind == kind and trainer.autocast_dtype == autocast
    summary = trainer.fit()
    assert summary["dtype"] == kind and summary["dtype_reason"].startswith(f"auto: {kind}")
    on_disk = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert on_disk["dtype"] == kind and on_disk["hardware"] == device.hardware().summary()
    first = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["event"] == "precision" and first["dtype"] == kind
    assert f"precision: {kind} (auto: " in capsys.readouterr().err

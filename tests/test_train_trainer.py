"""The trainer: exact resume, NaN steps, checkpoints that survive crashes and report corruption,
bf16 autocast and gradient checkpointing against float32, BERT and LLaMA runs."""

import json
import math
import shutil
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from myllm101.fast import cpu_gemm
from myllm101.train import Trainer
from myllm101.train import checkpoint as ckpt
from myllm101.train.divergence import params_finite
from myllm101.train.host_memory import reuse_freed_memory
from myllm101.train.trainer import TrainingDiverged
from tests.train_helpers import TOKENS, config, losses, one_thread  # noqa: F401 (autouse)


def test_resume_gives_exactly_the_uninterrupted_losses(tmp_path):
    # dropout (torch RNG) and accumulation on, so RNG and optimizer state both matter
    cfg = config(tmp_path, model={"preset": "gpt-tiny", "dropout": 0.1}, grad_accum_steps=2,
                 save_interval=6, keep_last=5)  # fmt: skip
    full = Trainer(cfg, TOKENS, TOKENS)
    full.fit()
    # the run is "killed" after step 6: drop everything written later, then resume
    shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000012")
    shutil.rmtree(tmp_path / "run" / "best")
    resumed = Trainer(cfg, TOKENS, TOKENS, resume=True)
    resumed.fit()
    assert [r["step"] for r in resumed.history] == list(range(7, 13))
    assert losses(resumed) == losses(full)[6:]  # bit-for-bit
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    steps = [
        r["step"] for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl")) if "loss" in r
    ]
    assert steps == list(range(1, 13))  # the log has each step once


def test_resume_keeps_the_cpu_gemm_choices(tmp_path, monkeypatch):
    """A resumed run multiplies with the GEMM libraries the run it continues chose (kept in
    trainer_state.json), not ones timed afresh, which may differ: a fake clock prefers oneDNN in
    the first run and MKL after it, and the resumed run still repeats the losses bit for bit."""
    monkeypatch.setattr(cpu_gemm, "MIN_FLOPS", 0)  # the tiny model's GEMMs are chosen too
    cpu_gemm.set_mode("auto")
    now, prefer, real = [0.0], ["onednn"], dict(cpu_gemm._LIBRARIES)

    def charged(lib):
        def run(*args):
            now[0] += 1.0 if lib == prefer[0] else 3.0
            return real[lib](*args)

        return run

    monkeypatch.setattr(cpu_gemm, "clock", lambda: now[0])
    monkeypatch.setattr(cpu_gemm, "_LIBRARIES", {lib: charged(lib) for lib in real})
    try:
        cfg = config(tmp_path, save_interval=6, keep_last=5)
        full = Trainer(cfg, TOKENS, TOKENS)
        full.fit()
        chosen = cpu_gemm.choices()
        assert chosen and set(chosen.values()) == {"onednn"}
        step_6 = tmp_path / "run" / "checkpoints" / "step_0000006"
        assert json.loads((step_6 / "trainer_state.json").read_text())["cpu_gemm"] == chosen
        shutil.rmtree(tmp_path / "run" / "checkpoints" / "step_0000012")
        shutil.rmtree(tmp_path / "run" / "best")
        cpu_gemm.set_mode("auto")  # a new process: nothing chosen yet, and MKL now times faster
        prefer[0] = "aten"
        resumed = Trainer(cfg, TOKENS, TOKENS, resume=True)
        resumed.fit()
        assert cpu_gemm.choices() == chosen
        assert losses(resumed) == losses(full)[6:]  # bit-for-bit
        assert json.loads((tmp_path / "run" / "summary.json").read_text())["cpu_gemm"] == chosen
    finally:
        cpu_gemm.set_mode(None)


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="--resume: expected a checkpoint in .*found none"):
        Trainer(config(tmp_path), TOKENS, TOKENS, resume=True).fit()


def test_non_finite_loss_skips_the_step_and_stops_after_max_bad_steps(tmp_path):
    t = Trainer(config(tmp_path, max_bad_steps=1, max_steps=8), TOKENS, TOKENS)
    real = t.forward

    def poisoned(**b):  # steps 3 and 5 (0-based 2 and 4) return NaN
        out = real(**b)
        if t.step in (2, 4):
            out.loss = out.loss * float("nan")
        return out

    t.forward = poisoned
    before = {}

    def snapshot():
        before.update({k: v.clone() for k, v in t.model.state_dict().items()})

    orig_step = t.train_step

    def step_and_check():
        snapshot()
        rec = orig_step()
        if "event" in rec:  # a skipped step leaves the weights alone
            for k, v in t.model.state_dict().items():
                assert torch.equal(v, before[k]), k
        return rec

    t.train_step = step_and_check
    with pytest.raises(TrainingDiverged) as err:  # too many bad steps: the run diverged
        t.fit()
    summary = err.value.summary
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["diverged"] is True
    events = [r["step"] for r in t.history if r.get("event") == "non_finite_loss"]
    assert events == [3, 5]
    assert summary["skipped_steps"] == 2 and summary["steps"] == 5
    assert "non-finite loss in 2 steps (max_bad_steps=1)" in summary["stop_reason"]
    assert all(math.isfinite(x) for x in losses(t) if x == x)


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_params_finite_sees_one_bad_element_in_any_parameter(tmp_path, bad, dtype):
    # the per-step check reads each parameter's min and max: one NaN or +-inf anywhere (first,
    # last or middle parameter, any position) must show, in any dtype; an empty one is skipped
    t = Trainer(config(tmp_path), TOKENS, TOKENS)
    t.model.to(dtype)
    t.model.register_parameter("empty", torch.nn.Parameter(torch.zeros(0, dtype=dtype)))
    params = [p for p in t.model.parameters() if p.numel()]
    assert params_finite(t.wrapped, t.dist, t.device)
    for p, i in ((params[0], 0), (params[len(params) // 2], -1), (params[-1], 3)):
        with torch.no_grad():
            old = p.view(-1)[i].item()
            p.view(-1)[i] = bad
            assert not params_finite(t.wrapped, t.dist, t.device)
            p.view(-1)[i] = old
    assert params_finite(t.wrapped, t.dist, t.device)


def test_checkpoint_round_trip_and_keep_last(tmp_path):
    cfg = config(tmp_path, save_interval=3, keep_last=2, eval_interval=6)
    t = Trainer(cfg, TOKENS, TOKENS)
    summary = t.fit()
    names = [p.name for p in ckpt.list_checkpoints(tmp_path / "run")]
    assert names == ["step_0000009", "step_0000012"]
    model, tok, mcfg = ckpt.load_model(tmp_path / "run" / "checkpoints" / "step_0000012")
    for (k, a), b in zip(model.state_dict().items(), t.model.state_dict().values()):
        assert torch.equal(a, b), k
    assert model.lm_head.weight is model.wte.weight  # the tie survives saving it once
    assert summary["best_val_loss"] == min(
        r["val_loss"]
        for r in map(json.loads, open(tmp_path / "run" / "metrics.jsonl"))
        if "val_loss" in r
    )
    assert (tmp_path / "run" / "loss.png").stat().st_size > 1000
    assert summary["host_malloc"] == reuse_freed_memory()  # what the run set (idempotent)
    assert ckpt.resolve_model_dir(tmp_path / "run") == tmp_path / "run"  # the final export


def test_crash_during_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    cfg = config(tmp_path, save_interval=4, keep_last=3, max_steps=8)
    t = Trainer(cfg, TOKENS, TOKENS)
    calls = {"n": 0}
    real_commit = ckpt._commit

    def crash_on_second(tmp, directory):  # temp dir written, then the "process dies"
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt("killed between writing and renaming")
        return real_commit(tmp, directory)

    monkeypatch.setattr(ckpt, "_commit", crash_on_second)
    with pytest.raises(KeyboardInterrupt):
        t.fit()
    run = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000004"]
    assert not [p for p in (run / "checkpoints").iterdir() if p.name.startswith(".")]
    state, tstate = ckpt.load_training_state(run / "checkpoints" / "step_0000004")
    assert tstate["step"] == 4 and "optimizer" in state
    monkeypatch.setattr(ckpt, "_commit", real_commit)
    resumed = Trainer(cfg, TOKENS, TOKENS, resume=True)
    resumed.fit()
    assert resumed.step == 8


KILL_MID_SAVE = """
import os, signal, sys
import numpy as np
from myllm101.train import TrainConfig, Trainer, checkpoint
real = checkpoint.save_file
def dying_save(tensors, path, metadata=None):
    real(tensors, path, metadata=metadata)
    if "step_0000008" in str(path):  # the second checkpoint: half its weights, then SIGKILL
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_file = dying_save
cfg = TrainConfig(**{cfg!r})
Trainer(cfg, np.arange(4000) % 97, np.arange(4000) % 97).fit()
"""


@pytest.mark.slow
def test_process_killed_mid_save_leaves_the_previous_checkpoint(tmp_path):
    """A real SIGKILL while the second checkpoint's weights are half written."""
    cfg = config(tmp_path, save_interval=4, keep_last=3, max_steps=8, eval_interval=4)
    script = textwrap.dedent(KILL_MID_SAVE).format(cfg=cfg.to_dict())
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    run = tmp_path / "run"
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000004"]
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert len(names) == 2 and names[0].startswith(ckpt.TMP_PREFIX) and names[1] == "step_0000004"
    state, tstate = ckpt.load_training_state(run / "checkpoints" / "step_0000004")
    assert tstate["step"] == 4 and "optimizer" in state
    resumed = Trainer(config(tmp_path, save_interval=4, keep_last=3, max_steps=8),
                      np.arange(4000) % 97, np.arange(4000) % 97, resume=True)  # fmt: skip
    resumed.fit()
    assert resumed.step == 8
    names = sorted(p.name for p in (run / "checkpoints").iterdir())
    assert names == ["step_0000004", "step_0000008"]  # the half-written temp dir was cleaned up


@pytest.mark.parametrize(
    "damage,match",
    [
        ("truncate", r"model.safetensors is truncated or altered: expected \d+ bytes, got \d+"),
        ("flip", "model.safetensors is corrupted"),
        ("manifest", "not a complete checkpoint: manifest.json is missing"),
    ],
)
def test_corrupted_checkpoint_is_a_clear_error(tmp_path, damage, match):
    Trainer(config(tmp_path, max_steps=2, save_interval=2), TOKENS, TOKENS).fit()
    d = ckpt.latest_checkpoint(tmp_path / "run")
    f = d / "model.safetensors"
    data = bytearray(f.read_bytes())
    if damage == "truncate":
        f.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data[-5] ^= 0xFF
        f.write_bytes(data)
    else:
        (d / "manifest.json").unlink()
    with pytest.raises(ValueError, match=match):
        ckpt.load_training_state(d)
    with pytest.raises(ValueError, match=match):
        Trainer(config(tmp_path, max_steps=2), TOKENS, TOKENS, resume=True).fit()


def test_bf16_autocast_and_gradient_checkpointing_track_float32(tmp_path):
    runs = {}
    for name, kw in {
        "fp32": {},
        "bf16": {"dtype": "bf16"},
        "ckpt": {"gradient_checkpointing": True},
    }.items():
        t = Trainer(config(tmp_path / name, max_steps=6), TOKENS, TOKENS)
        t.fit() if name == "fp32" else None
        if name != "fp32":
            t = Trainer(config(tmp_path / name, max_steps=6, **kw), TOKENS, TOKENS)
            t.fit()
        runs[name] = np.array(losses(t))
    # recomputing a block in backward is the same float32 arithmetic: equal to rounding
    np.testing.assert_allclose(runs["ckpt"], runs["fp32"], rtol=1e-6, atol=0)
    # bf16 keeps 8 bits of mantissa (relative step 2^-8 = 0.4%); the loss is a mean over 60
    # positions, so it stays within ~0.5% of float32 over these steps
    np.testing.assert_allclose(runs["bf16"], runs["fp32"], rtol=5e-3, atol=0)
    assert not np.array_equal(runs["bf16"], runs["fp32"])  # autocast really ran


def test_early_stopping(tmp_path):
    cfg = config(tmp_path, max_steps=40, eval_interval=2, early_stopping_patience=1, lr=0.5,
                 warmup_steps=0, grad_clip=0.0)  # fmt: skip
    summary = Trainer(cfg, TOKENS, TOKENS).fit()
    assert summary["stop_reason"].startswith("early stopping") and summary["steps"] < 40


@pytest.mark.parametrize("preset", ["llama-tiny", "bert-tiny"])
def test_other_models_train(tmp_path, preset):
    cfg = config(tmp_path, model={"preset": preset}, max_steps=20, eval_interval=20, lr=1e-2)
    learnable = (np.arange(4000) * 7) % 97  # each token determines its neighbours
    t = Trainer(cfg, learnable, learnable)
    summary = t.fit()
    if preset == "llama-tiny":  # (tiny BERT sees ~2 masked tokens a row: it needs ~150 steps)
        assert losses(t)[-1] < 0.9 * losses(t)[0]
    assert all(map(math.isfinite, losses(t))) and summary["best_val_loss"] is not None
    model, _, mcfg = ckpt.load_model(tmp_path / "run")
    assert mcfg.model_type == preset.split("-")[0]


def test_time_budget_stops_with_a_final_eval_and_checkpoint(tmp_path):
    summary = Trainer(config(tmp_path, max_steps=1000, max_time_s=1e-9), TOKENS, TOKENS).fit()
    assert summary["steps"] == 1 and summary["stop_reason"].startswith("time budget")
    assert summary["best_val_loss"] is not None
    assert ckpt.latest_checkpoint(tmp_path / "run").name == "step_0000001"


def test_clean_interrupted_saves_restores_a_moved_aside_directory(tmp_path):
    tmp, old = ckpt.TMP_PREFIX, ckpt.OLD_PREFIX
    (tmp_path / f"{tmp}best-1a2b3c4d").mkdir()  # half written: deleted
    (
        tmp_path / f"{old}best-5e6f7a8b"
    ).mkdir()  # moved aside, replacement never renamed in: restored
    (tmp_path / f"{old}best-5e6f7a8b" / "model.safetensors").write_bytes(b"x")
    (tmp_path / "step_0000004").mkdir()
    (tmp_path / f"{old}step_0000004-99999999").mkdir()  # its replacement landed: deleted
    ckpt.clean_interrupted_saves(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["best", "step_0000004"]
    assert (tmp_path / "best" / "model.safetensors").read_bytes() == b"x"


@pytest.mark.slow
def test_compiled_training_tracks_eager(tmp_path):
    """compile=True (inductor) trains the same model: float32 losses agree to rounding (the
    compiler fuses and reorders float32 sums, so not bit for bit)."""
    from torch._dynamo.utils import counters

    counters.clear()
    runs = {}
    for flag in (False, True):
        t = Trainer(config(tmp_path / str(flag), max_steps=4, compile=flag), TOKENS, TOKENS)
        t.fit()
        runs[flag] = losses(t)
    assert counters["stats"]["unique_graphs"] > 0  # the compiled run really went through dynamo
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-4)

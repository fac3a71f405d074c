"""A training run never loses a user's files (train/rundir.py, issue 12 findings 1-3).

Each test here fails on the code before run markers and locks, where ``fit()`` deleted every
``.tmp-*`` and renamed every ``.old-*`` directory in out_dir, trained into any directory, and
let two processes write one run:
- foreign ``.tmp-cache`` / ``.old-photos-2023`` dirs were deleted / renamed to ``photos``;
- a fresh run into an existing run trained over it (exit 0, metrics.jsonl and best/ replaced);
- ``--overwrite`` / ``TrainConfig(overwrite=...)`` did not exist (override error / TypeError);
- a non-empty directory that is no run was trained into;
- a second concurrent process trained too (exit 0) instead of being refused;
- a killed run left no lock file (and the legacy run got no marker).
The lock file's content (the last holder's pid) is bookkeeping and is left out of the
byte-for-byte comparisons.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from myllm101.train import TrainConfig, Trainer, rundir
from myllm101.train import checkpoint as ckpt
from myllm101.train import cli as train_cli
from tests.train_helpers import one_thread  # noqa: F401 (autouse)

ROOT = Path(__file__).resolve().parents[1]
TOKENS = np.random.default_rng(0).integers(0, 97, size=2000)


def config(out_dir, **kw) -> TrainConfig:
    base = dict(
        out_dir=str(out_dir), model={"preset": "gpt-tiny"}, seq_len=16, batch_size=2, max_steps=4,
        warmup_steps=1, eval_interval=4, eval_batches=1, save_interval=2, keep_last=5,
        dtype="float32", progress=False, log_interval=1, sample_tokens=0, num_threads=1,
    )  # fmt: skip
    return TrainConfig(**{**base, **kw})


def train(out_dir, resume=False, **kw) -> Trainer:
    t = Trainer(config(out_dir, **kw), TOKENS, TOKENS, resume=resume)
    t.fit()
    return t


def snapshot(d: Path) -> dict[str, bytes | None]:
    """Every path under ``d`` (dirs as None) -> its bytes, the lock file left out."""
    return {
        str(p.relative_to(d)): (p.read_bytes() if p.is_file() else None)
        for p in sorted(d.rglob("*"))
        if p.name != rundir.LOCK
    }


@pytest.fixture(scope="module")
def cli_config(tmp_path_factory) -> Path:
    """A config file for ``myllm101 train`` (text files + a 300-token BPE tokenizer)."""
    from myllm101.fast.bpe import bpe_train
    from myllm101.tokenizer.formats import save_tokenizer

    d = tmp_path_factory.mktemp("cli")
    text = "To be, or not to be, that is the question.\n\nWhether 'tis nobler in the mind.\n" * 40
    for split in ("train", "val"):
        (d / f"{split}.txt").write_text(text)
    save_tokenizer(bpe_train(text, 300), d / "tok")
    cfg = {**config("unused").to_dict(), "data_dir": str(d), "tokenizer": str(d / "tok")}
    del cfg["out_dir"]
    cfg.pop("overwrite", None)  # (as a config file from before the field existed)
    (d / "c.json").write_text(json.dumps(cfg))
    return d / "c.json"


def test_foreign_dot_tmp_and_dot_old_dirs_survive_a_run(tmp_path):
    run = tmp_path / "run"
    train(run)
    shutil.rmtree(run / "checkpoints" / "step_0000004")  # "killed" after step 2: resume continues
    for parent in (run, run / "checkpoints"):
        for name in (".tmp-cache", ".old-photos-2023"):
            (parent / name).mkdir()
            (parent / name / "keep.txt").write_text(f"{parent.name}/{name}")
    train(run, resume=True)
    for parent in (run, run / "checkpoints"):
        for name in (".tmp-cache", ".old-photos-2023"):
            assert (parent / name / "keep.txt").read_text() == f"{parent.name}/{name}"
        assert not (parent / "photos").exists()
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000002", "step_0000004"]


def test_fresh_run_into_an_existing_run_is_refused_and_changes_nothing(tmp_path, cli_config,
                                                                      capsys):  # fmt: skip
    run = tmp_path / "run"
    argv = ["train", "--config", str(cli_config), f"--out_dir={run}"]
    assert train_cli.main(argv) == 0
    before = snapshot(run)
    capsys.readouterr()
    assert train_cli.main(argv) == 2
    err = capsys.readouterr().err
    assert f"{run} is an existing run (started " in err
    assert "use --resume to continue it or --overwrite to start over" in err
    assert snapshot(run) == before  # byte for byte
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]
    with pytest.raises(ValueError, match="is an existing run"):  # the same through the Trainer
        train(run, max_steps=2)
    assert snapshot(run) == before


def test_overwrite_moves_the_old_run_aside_and_starts_fresh(tmp_path, cli_config, capsys):
    run = tmp_path / "run"
    argv = ["train", "--config", str(cli_config), f"--out_dir={run}"]
    assert train_cli.main(argv) == 0
    before, old_marker = snapshot(run), rundir.read_marker(run)
    capsys.readouterr()
    assert train_cli.main([*argv, "--overwrite", "--max_steps=2", "--save_interval=1"]) == 0
    err = capsys.readouterr().err
    (aside,) = [p for p in tmp_path.iterdir() if p.name != "run"]
    assert aside.name.startswith("run.replaced-") and f"moved the old run {run} to {aside}" in err
    assert snapshot(aside) == before  # everything of the old run, byte for byte
    new_marker = rundir.read_marker(run)
    assert new_marker["run_id"] != old_marker["run_id"]
    assert [p.name for p in ckpt.list_checkpoints(run)] == ["step_0000001", "step_0000002"]
    steps = [r["step"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r]
    assert steps == [1, 2]
    # through the Trainer too; --resume and --overwrite together are refused
    train(run, overwrite=True, max_steps=1)
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("run.replaced-")]) == 2
    with pytest.raises(ValueError, match="at most one"):
        train(run, resume=True, overwrite=True)


@pytest.mark.parametrize("flags", [{}, {"resume": True}, {"overwrite": True}])
def test_a_non_empty_directory_that_is_no_run_is_refused(tmp_path, flags):
    home = tmp_path / "home"
    (home / ".tmp-cache").mkdir(parents=True)
    (home / ".old-photos-2023").mkdir()
    (home / "notes.txt").write_text("mine")
    (home / "checkpoints" / "step_0000001").mkdir(parents=True)  # looks like a run, is not:
    before = snapshot(home)  # notes.txt is nothing a run writes
    with pytest.raises(ValueError, match="is not empty and is not a myllm101 run directory"):
        train(home, **flags)
    assert snapshot(home) == before and not (home / rundir.LOCK).exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home"]


def test_a_run_from_before_markers_can_be_resumed_and_gets_a_marker(tmp_path):
    run = tmp_path / "run"
    train(run)
    (run / rundir.MARKER).unlink()
    (run / rundir.LOCK).unlink()  # as an older version left it
    shutil.rmtree(run / "checkpoints" / "step_0000004")
    with pytest.raises(ValueError, match="is an existing run"):
        train(run)
    t = train(run, resume=True)
    assert [r["step"] for r in t.history] == [3, 4] and rundir.is_run_dir(run)


GATED = """
import pathlib, sys, time
from myllm101.train import Trainer, cli
real = Trainer.train_step
def gated(self):
    if self.step == 1:  # holding the run's lock: tell the test, wait for its go
        pathlib.Path({ready!r}).write_text("")
        t0 = time.time()
        while not pathlib.Path({go!r}).exists() and time.time() - t0 < 120:
            time.sleep(0.05)
    return real(self)
Trainer.train_step = gated
sys.exit(cli.main({argv!r}))
"""


@pytest.mark.slow
def test_a_second_concurrent_trainer_is_refused_and_the_first_finishes(tmp_path, cli_config):
    """Two real processes on one out_dir: the second (fresh, --overwrite or --resume) is
    refused naming the first's pid; the first finishes with loadable checkpoints."""
    run, ready, go = tmp_path / "run", tmp_path / "ready", tmp_path / "go"
    argv = ["train", "--config", str(cli_config), f"--out_dir={run}"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    script = textwrap.dedent(GATED).format(ready=str(ready), go=str(go), argv=argv)
    first = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        t0 = time.time()
        while not ready.exists():
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.time() - t0 < 120, "the first trainer never reached step 1"
            time.sleep(0.05)
        for extra in ([], ["--overwrite"], ["--resume"]):
            cmd = [sys.executable, "-m", "myllm101", *argv, *extra]
            second = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True,
                                    timeout=300)  # fmt: skip
            assert second.returncode == 2, (extra, second.stderr[-3000:])
            assert "in use by another training process" in second.stderr, second.stderr[-3000:]
            assert f"(pid {first.pid} on host " in second.stderr
        assert sorted(p.name for p in tmp_path.iterdir()) == ["ready", "run"]  # nothing moved
        go.write_text("")
        out, err = first.communicate(timeout=300)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, err[-3000:]
    assert "done: 4 steps" in out
    names = [p.name for p in ckpt.list_checkpoints(run)]
    assert names == ["step_0000002", "step_0000004"]
    for name in names:
        _, tstate = ckpt.load_training_state(run / "checkpoints" / name)
        assert tstate["step"] == int(name[5:])
    ckpt.load_model(run)
    steps = [r["step"] for r in map(json.loads, open(run / "metrics.jsonl")) if "loss" in r]
    assert steps == [1, 2, 3, 4]  # one run's log, each step once


KILLED = """
import os, signal, sys
import numpy as np
from myllm101.train import TrainConfig, Trainer, checkpoint
real = checkpoint.save_checkpoint
def save_then_die(directory, *a, **kw):
    real(directory, *a, **kw)
    if directory.name == "step_0000002":  # the first checkpoint is complete: SIGKILL
        os.kill(os.getpid(), signal.SIGKILL)
checkpoint.save_checkpoint = save_then_die
Trainer(TrainConfig(**{cfg!r}), np.arange(2000) % 97, np.arange(2000) % 97).fit()
"""


@pytest.mark.slow
def test_a_stale_lock_left_by_a_dead_process_does_not_block(tmp_path):
    run = tmp_path / "run"
    script = textwrap.dedent(KILLED).format(cfg=config(run).to_dict())
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == -signal.SIGKILL, err[-3000:]
    assert json.loads((run / rundir.LOCK).read_text())["pid"] == proc.pid  # left behind
    t = train(run, resume=True)  # the dead process's lock file is reused
    assert [r["step"] for r in t.history] == [3, 4]
    assert json.loads((run / rundir.LOCK).read_text())["pid"] == os.getpid()

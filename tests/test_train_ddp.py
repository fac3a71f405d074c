"""DDP and FSDP on CPU (gloo, 2 processes) equal one process with the same global batch; a
torchrun-launched FSDP run resumes exactly."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from myllm101.train import TrainConfig, Trainer
from myllm101.train import checkpoint as ckpt
from myllm101.train.metrics import read_metrics

ROOT = Path(__file__).resolve().parents[1]

TOKENS = (np.arange(3000) * 7) % 97
STEPS = 5


def config(out_dir, batch_size, accum=2, kind="ddp") -> TrainConfig:
    return TrainConfig(distributed=kind,
        out_dir=str(out_dir), model={"preset": "gpt-tiny"}, seq_len=12, batch_size=batch_size,
        grad_accum_steps=accum, max_steps=STEPS, warmup_steps=2, lr=1e-2, dtype="float64",
        eval_interval=STEPS, eval_batches=2, save_interval=100, progress=False, num_threads=1,
    )  # fmt: skip


def _worker(rank: int, world: int, port: int, out_dir: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    from myllm101.train import distributed

    t = Trainer(config(out_dir, batch_size=2, kind=kind), TOKENS, TOKENS)
    t.fit()
    full = distributed.full_state_dict(t.wrapped)  # FSDP gathers the shards (all ranks take part)
    if full:  # DDP: every rank's replica; FSDP: the gathered weights, on rank 0 only
        torch.save({k: v.clone() for k, v in full.items()}, f"{out_dir}/rank{rank}.pt")
    torch.save(torch.tensor([r["loss"] for r in t.history]), f"{out_dir}/losses{rank}.pt")
    distributed.cleanup()


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ddp", "fsdp"])
def test_two_processes_equal_one_process(tmp_path, kind):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path / "ddp"), kind), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = Trainer(config(tmp_path / "one", batch_size=4), TOKENS, TOKENS)
    single.fit()
    ranks = [
        torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in ((0, 1) if kind == "ddp" else (0,))
    ]
    # float64; the two sides differ only in where the mean over 4 rows is summed (all-reduce of
    # two half-batch means vs one mean): ~1e-16 per step, well inside 1e-10 after 5 AdamW steps
    for k, v in single.model.state_dict().items():
        if kind == "ddp":
            torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0)  # replicas agree
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-10, atol=1e-12)
    ddp_losses = torch.load(tmp_path / "ddp" / "losses0.pt")
    torch.testing.assert_close(ddp_losses, torch.tensor([r["loss"] for r in single.history]),
                               rtol=1e-10, atol=0)  # fmt: skip
    assert (tmp_path / "ddp" / "best").is_dir()  # rank 0 wrote; nobody else raced it


def _torchrun(cfg_path, *overrides: str) -> None:
    # --standalone: torchrun picks a free rendezvous port itself (no race with other tests)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "myllm101", "train", "--config", str(cfg_path), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _losses(run_dir) -> dict[int, float]:
    return {r["step"]: r["loss"] for r in read_metrics(run_dir / "metrics.jsonl") if "loss" in r}


@pytest.mark.slow
def test_torchrun_fsdp_resume_continues_exactly(tmp_path):
    """``torchrun -m myllm101 train`` with FSDP: resumed from step 4, steps 5-8 repeat exactly."""
    from myllm101.fast.bpe import bpe_train
    from myllm101.tokenizer.formats import save_tokenizer

    text = "Now is the winter of our discontent\n\nMade glorious summer by this sun of York.\n" * 60
    for split in ("train", "val"):
        (tmp_path / f"{split}.txt").write_text(text)
    save_tokenizer(bpe_train(text, 300), tmp_path / "tok")
    cfg = {"data_dir": str(tmp_path), "tokenizer": str(tmp_path / "tok"), "distributed": "fsdp",
           "model": {"preset": "gpt-tiny"}, "seq_len": 16, "batch_size": 2, "grad_accum_steps": 2,
           "max_steps": 8, "warmup_steps": 2, "eval_interval": 4, "eval_batches": 2,
           "save_interval": 4, "keep_last": 3, "log_interval": 1, "progress": False, "sample_tokens": 0,
           "dtype": "float64"}  # fmt: skip
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    _torchrun(tmp_path / "c.json", f"--out_dir={tmp_path / 'whole'}")
    # the run "died" after step 4: a copy without what was written later, then --resume
    shutil.copytree(tmp_path / "whole", tmp_path / "parts")
    shutil.rmtree(tmp_path / "parts" / "checkpoints" / "step_0000008")
    shutil.rmtree(tmp_path / "parts" / "best")
    _torchrun(tmp_path / "c.json", f"--out_dir={tmp_path / 'parts'}", "--resume")
    whole, parts = _losses(tmp_path / "whole"), _losses(tmp_path / "parts")
    assert sorted(whole) == sorted(parts) == list(range(1, 9))
    # float64, same ranks, same reduction order: the resumed steps repeat the uninterrupted ones
    for step in range(5, 9):
        assert parts[step] == pytest.approx(whole[step], rel=1e-12, abs=0), step
    model, _, _ = ckpt.load_model(tmp_path / "parts")  # rank 0 wrote a plain, gathered model
    assert sum(p.numel() for p in model.parameters()) > 0

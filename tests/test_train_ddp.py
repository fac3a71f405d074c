"""DDP and FSDP on CPU (gloo, 2 processes) equal one process with the same global batch, and
FSDP really shards (each rank holds its half of every parameter and of its Adam moments); a
torchrun-launched FSDP run resumed from a checkpoint re-runs the remaining steps bit for bit."""

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


def _local_shards(t: Trainer) -> dict:
    """This rank's part of each parameter and of its Adam first moment, with how it is laid out."""
    from torch.distributed.tensor import DTensor

    from myllm101.train import distributed

    out = {"root": distributed.is_sharded(t.wrapped),
           "blocks": [distributed.is_sharded(b) for b in distributed.blocks_of(t.model)],
           "params": {}}  # fmt: skip
    for name, p in t.wrapped.named_parameters():
        moment = t.optimizer.state[p]["exp_avg"]
        dt = isinstance(p, DTensor)
        out["params"][name] = {
            "dtensor": dt,
            "layout": (repr(p.placements), p.device_mesh.size()) if dt else None,
            "local": (p.to_local() if dt else p).detach().clone(),
            "moment": (moment.to_local() if isinstance(moment, DTensor) else moment).clone(),
        }
    return out


def _worker(rank: int, world: int, port: int, out_dir: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    from myllm101.train import distributed

    t = Trainer(config(out_dir, batch_size=2, kind=kind), TOKENS, TOKENS)
    t.fit()
    if kind == "fsdp":  # what this rank holds, after training (before anything is gathered)
        torch.save(_local_shards(t), f"{out_dir}/shards{rank}.pt")
    full = distributed.full_state_dict(t.wrapped)  # FSDP gathers the shards (all ranks take part)
    if full:  # DDP: every rank's replica; FSDP: the gathered weights, on rank 0 only
        torch.save({k: v.clone() for k, v in full.items()}, f"{out_dir}/rank{rank}.pt")
    torch.save(torch.tensor([r["loss"] for r in t.history]), f"{out_dir}/losses{rank}.pt")
    # both ranks done before either tears gloo down: one rank's process group going away while
    # the other still used it aborted rank 0 at exit once ("terminate called without an active
    # exception", after every result was written)
    torch.distributed.barrier()
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
    if kind == "fsdp":
        _check_sharded(ranks[0], [torch.load(tmp_path / "ddp" / f"shards{r}.pt") for r in (0, 1)])


def _check_sharded(full: dict, shards: list[dict]) -> None:
    """Every block and the root are FSDP units, and each parameter is split on dim 0 over the 2
    ranks as torch.chunk splits it: rank r holds only rows [r*ceil(n/2), ...) of the trained
    weights (the two parts together are the gathered tensor, bit for bit, so nothing is held
    twice), and its Adam moment is sharded the same way."""
    world = len(shards)
    for s in shards:
        assert s["root"] and s["blocks"] and all(s["blocks"]), (s["root"], s["blocks"])
    names = list(shards[0]["params"])
    assert names == list(shards[1]["params"]) and len(names) > 10, names
    for name in names:
        parts = [s["params"][name] for s in shards]
        whole = full[name]
        for part in parts:
            assert part["dtensor"] and part["layout"] == ("(Shard(dim=0),)", world), (name, part)
        rows = -(-whole.shape[0] // world)  # ceil: torch.chunk's piece size
        sizes = [whole[:rows].numel(), whole[rows:].numel()]
        assert [p["local"].numel() for p in parts] == sizes, name  # about 1/world each
        assert all(p["moment"].shape == p["local"].shape for p in parts), name
        assert torch.equal(torch.cat([p["local"] for p in parts]), whole), name


def _torchrun(cfg_path, *overrides: str) -> None:
    # --standalone: torchrun picks a free rendezvous port itself (no race with other tests)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "myllm101", "train", "--config", str(cfg_path), *overrides]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=ROOT,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]


def _train_records(records: list[dict]) -> dict[int, dict]:
    return {r["step"]: r for r in records if "loss" in r}


def _assert_bitwise_equal(a, b, where: str = "") -> None:
    """Nested dicts / lists of tensors and numbers: equal keys, and every tensor equal bit for bit
    (same dtype and shape). A list and a tuple compare as sequences (a resumed optimizer's betas
    come back as a list)."""
    seq = (list, tuple)
    assert type(a) is type(b) or (isinstance(a, seq) and isinstance(b, seq)), where
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for k in a:
            _assert_bitwise_equal(a[k], b[k], f"{where}/{k}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_bitwise_equal(x, y, f"{where}[{i}]")
    elif isinstance(a, torch.Tensor):
        assert a.dtype == b.dtype and torch.equal(a, b), where
    else:
        assert a == b, where


@pytest.mark.slow
def test_torchrun_fsdp_resume_reruns_the_steps_exactly(tmp_path):
    """``torchrun -m myllm101 train`` with FSDP, "killed" right after saving step 4, then
    ``--resume``: the resumed processes themselves run steps 5-8, once each, and reproduce the
    uninterrupted run bit for bit: per-step loss, lr, gradient norm and tokens, the step-8 eval,
    and the step-8 checkpoint's weights and (gathered) optimizer state.

    Bit for bit, not approximately: float64, the same 2 ranks and the same batches in the same
    order, so every reduce-scatter / all-reduce adds the same numbers in the same order as in the
    uninterrupted run, and the step-4 checkpoint holds the full float64 weights and Adam moments,
    which every rank cuts back into the same shards it had. Any difference is a resume bug."""
    from safetensors.torch import load_file

    from myllm101.fast.bpe import bpe_train
    from myllm101.tokenizer.formats import save_tokenizer
    from myllm101.train.rundir import MARKER

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
    whole, parts = tmp_path / "whole", tmp_path / "parts"
    _torchrun(tmp_path / "c.json", f"--out_dir={whole}")
    # the run "died" just after saving step 4: its directory as it was then, less metrics.jsonl,
    # so that every record read from parts/ below was written by the resumed run
    (parts / "checkpoints").mkdir(parents=True)
    shutil.copy(whole / MARKER, parts / MARKER)
    shutil.copytree(whole / "checkpoints" / "step_0000004", parts / "checkpoints" / "step_0000004")
    _torchrun(tmp_path / "c.json", f"--out_dir={parts}", "--resume")

    got, ref = read_metrics(parts / "metrics.jsonl"), read_metrics(whole / "metrics.jsonl")
    # it started at step 4 and trained 5, 6, 7, 8 once each: a "resume" that began again at step
    # 0 logs steps 1-8, one that skipped or repeated a step logs another list
    assert got[0]["step"] == 4 and got[0]["event"] == "precision", got[0]
    assert [r["step"] for r in got if "loss" in r] == [5, 6, 7, 8]
    assert [r["step"] for r in ref if "loss" in r] == list(range(1, 9))
    got_steps, ref_steps = _train_records(got), _train_records(ref)
    keys = ("loss", "lr", "grad_norm", "tokens")  # JSON floats round-trip exactly (repr)
    for step in range(5, 9):
        assert {k: got_steps[step][k] for k in keys} == {k: ref_steps[step][k] for k in keys}, step
    evals = [[(r["step"], r["val_loss"]) for r in rs if "val_loss" in r] for rs in (got, ref)]
    assert evals[0] == evals[1][1:] and evals[0][0][0] == 8, evals

    ckpts = [run / "checkpoints" / "step_0000008" for run in (parts, whole)]
    weights = [load_file(c / "model.safetensors") for c in ckpts]
    _assert_bitwise_equal(weights[0], weights[1], "weights")
    at_4 = load_file(whole / "checkpoints" / "step_0000004" / "model.safetensors")
    assert all(not torch.equal(at_4[k], v) for k, v in weights[1].items())  # steps 5-8 trained
    (opt_got, st_got), (opt_ref, st_ref) = (ckpt.load_training_state(c) for c in ckpts)
    _assert_bitwise_equal(opt_got["optimizer"], opt_ref["optimizer"], "optimizer")
    _assert_bitwise_equal(opt_got["scheduler"], opt_ref["scheduler"], "scheduler")
    assert (st_got["step"], st_got["tokens_seen"]) == (st_ref["step"], st_ref["tokens_seen"])
    assert st_got["step"] == 8

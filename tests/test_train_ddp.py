"""DDP on CPU (gloo, 2 processes) equals one process with the same global batch."""

import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from myllm101.train import TrainConfig, Trainer

TOKENS = (np.arange(3000) * 7) % 97
STEPS = 5


def config(out_dir, batch_size, accum=2) -> TrainConfig:
    return TrainConfig(
        out_dir=str(out_dir), model={"preset": "gpt-tiny"}, seq_len=12, batch_size=batch_size,
        grad_accum_steps=accum, max_steps=STEPS, warmup_steps=2, lr=1e-2, dtype="float64",
        eval_interval=STEPS, eval_batches=2, save_interval=100, progress=False, num_threads=1,
    )  # fmt: skip


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))  # fmt: skip
    from myllm101.train import distributed

    t = Trainer(config(out_dir, batch_size=2), TOKENS, TOKENS)
    t.fit()
    torch.save({k: v.clone() for k, v in t.model.state_dict().items()}, f"{out_dir}/rank{rank}.pt")
    torch.save(torch.tensor([r["loss"] for r in t.history]), f"{out_dir}/losses{rank}.pt")
    distributed.cleanup()


@pytest.mark.slow
def test_ddp_two_processes_equals_one_process(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_worker, args=(2, port, str(tmp_path / "ddp")), nprocs=2, join=True)
    torch.set_num_threads(1)
    single = Trainer(config(tmp_path / "one", batch_size=4), TOKENS, TOKENS)
    single.fit()
    ranks = [torch.load(tmp_path / "ddp" / f"rank{r}.pt") for r in (0, 1)]
    # float64; the two sides differ only in where the mean over 4 rows is summed (all-reduce of
    # two half-batch means vs one mean): ~1e-16 per step, well inside 1e-10 after 5 AdamW steps
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ranks[0][k], ranks[1][k], rtol=0, atol=0)  # replicas agree
        torch.testing.assert_close(ranks[0][k], v, rtol=1e-10, atol=1e-12)
    ddp_losses = torch.load(tmp_path / "ddp" / "losses0.pt")
    torch.testing.assert_close(ddp_losses, torch.tensor([r["loss"] for r in single.history]),
                               rtol=1e-10, atol=0)  # fmt: skip
    assert (tmp_path / "ddp" / "best").is_dir()  # rank 0 wrote; nobody else raced it

"""torchrun support: process group set-up, model wrapping (DDP or FSDP), small collectives.

FSDP is torch's per-parameter sharding (``fully_shard``, "FSDP2"): each transformer block is one
all-gather unit and the root holds the embeddings and head. Unlike the older
``FullyShardedDataParallel`` wrapper it runs on CPU with gloo, so it is tested here.

``torchrun --nproc_per_node=N -m myllm101 train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we join
the group with gloo on CPU and nccl on CUDA. Without those variables everything here is a no-op
and the trainer runs as one process.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup(device_type: str) -> DistInfo:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        if device_type == "cuda":
            torch.cuda.set_device(info.local_rank)
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return info


def cleanup() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def blocks_of(model: torch.nn.Module) -> torch.nn.ModuleList:
    """The repeated transformer blocks (GPT: ``h``; LLaMA and BERT: ``layers``)."""
    blocks = getattr(model, "h", None) or getattr(model, "layers", None)
    if blocks is None:
        raise ValueError(f"fsdp: {type(model).__name__} has no block list (h or layers)")
    return blocks


def wrap(model: torch.nn.Module, info: DistInfo, kind: str, device: torch.device):
    """DDP (gradients averaged in backward) or FSDP (parameters sharded over ranks, in place)."""
    if not info.enabled:
        return model
    if kind == "fsdp":
        from torch.distributed.fsdp import fully_shard

        for block in blocks_of(model):
            fully_shard(block)
        fully_shard(model)  # the root: embeddings, final norm, (tied) head
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


def is_sharded(model: torch.nn.Module) -> bool:
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)


@contextlib.contextmanager
def no_sync(model: torch.nn.Module) -> Iterator[None]:
    """Skip the gradient all-reduce / reduce-scatter (accumulation micro-steps)."""
    if is_sharded(model):
        model.set_requires_gradient_sync(False)
        try:
            yield
        finally:
            model.set_requires_gradient_sync(True)
    elif hasattr(model, "no_sync"):
        with model.no_sync():
            yield
    else:
        yield


def clip_grad_norm(params: list[torch.Tensor], max_norm: float) -> torch.Tensor:
    """The global gradient norm (clipped to ``max_norm``) also when the gradients are shards."""
    from myllm101.fast.optim import clip_grad_norm as clip_local

    params = list(params)
    if params and any(isinstance(p, torch.distributed.tensor.DTensor) for p in params):
        # torch's clip reduces the shards' partial norms over ranks; same clipping rule as ours
        return torch.nn.utils.clip_grad_norm_(params, max_norm).full_tensor()
    return clip_local(params, max_norm)


def mean(value: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Average of a scalar tensor over ranks (itself without a group)."""
    if not info.enabled:
        return value
    v = value.detach().clone().float() if value.dtype != torch.float64 else value.detach().clone()
    dist.all_reduce(v, op=dist.ReduceOp.SUM)
    return v / info.world_size


def any_rank(flag: bool, info: DistInfo, device) -> bool:
    """True on every rank when ``flag`` is True on any (e.g. rank 0's time budget ran out)."""
    if not info.enabled:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def _full_options():
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True)


def full_state_dict(model) -> dict:
    """The unsharded state_dict (FSDP gathers, every rank must call; only rank 0 gets it, the
    others an empty dict; DDP unwraps)."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_model_state_dict

        return get_model_state_dict(model, options=_full_options())
    return getattr(model, "module", model).state_dict()


def full_optimizer_state(model, optimizer) -> dict:
    """The optimizer state, gathered to rank 0 and keyed by parameter name under FSDP."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import get_optimizer_state_dict

        return get_optimizer_state_dict(model, optimizer, options=_full_options())
    return optimizer.state_dict()


def load_full_state(model, optimizer, model_sd: dict, optim_sd: dict) -> None:
    """Inverse of the two above: every rank passes the full dicts and keeps its shards."""
    if is_sharded(model):
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        opts = StateDictOptions(full_state_dict=True)
        set_model_state_dict(model, model_sd, options=opts)
        set_optimizer_state_dict(model, optimizer, optim_sd, options=opts)
        return
    getattr(model, "module", model).load_state_dict(model_sd)
    optimizer.load_state_dict(optim_sd)

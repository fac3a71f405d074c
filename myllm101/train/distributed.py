"""torchrun support: process group set-up, model wrapping (DDP or FSDP), small collectives.

``torchrun --nproc_per_node=N -m myllm101 train ...`` sets RANK / WORLD_SIZE / LOCAL_RANK; we join
the group with gloo on CPU and nccl on CUDA. Without those variables everything here is a no-op
and the trainer runs as one process.
"""

from __future__ import annotations

import os
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


def wrap(model: torch.nn.Module, info: DistInfo, kind: str, device: torch.device):
    """DDP (gradients averaged in backward) or FSDP (parameters sharded over ranks)."""
    if not info.enabled:
        return model
    if kind == "fsdp":
        from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

        return FSDP(
            model, use_orig_params=True, device_id=device if device.type == "cuda" else None
        )
    from torch.nn.parallel import DistributedDataParallel as DDP

    return DDP(model, device_ids=[device.index] if device.type == "cuda" else None)


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


def full_state_dict(model) -> dict | None:
    """The unsharded state_dict on rank 0 (FSDP gathers; DDP unwraps)."""
    from torch.distributed.fsdp import FullyShardedDataParallel as FSDP

    if isinstance(model, FSDP):
        from torch.distributed.fsdp import FullStateDictConfig, StateDictType

        cfg = FullStateDictConfig(offload_to_cpu=True, rank0_only=True)
        with FSDP.state_dict_type(model, StateDictType.FULL_STATE_DICT, cfg):
            return model.state_dict()
    return getattr(model, "module", model).state_dict()

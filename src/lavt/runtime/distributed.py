"""torchrun / DistributedDataParallel when launched that way, a plain single process otherwise.

torchrun sets WORLD_SIZE, RANK and LOCAL_RANK in the environment (no ``--local_rank`` flag);
NCCL on CUDA, gloo on CPU.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistEnv:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def pin_memory(self) -> bool:
        """Whether data loaders should hand out page-locked batches: only a CUDA device gains
        (``.to(device, non_blocking=True)`` then overlaps the copy with compute)."""
        return self.device.type == "cuda"


def pick_device(preference: str = "auto", local_rank: int = 0) -> torch.device:
    """``auto``: this process's GPU if there is one, else the CPU. A bare ``cuda`` also means this
    process's GPU (``cuda:LOCAL_RANK``): under torchrun every rank would otherwise take GPU 0."""
    if preference == "auto":
        preference = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(preference)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", local_rank)
    return device


def init_distributed(device_preference: str = "auto") -> DistEnv:
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        device = pick_device(device_preference)
        if device.type == "cuda":  # made current: torch.cuda RNG save/restore (checkpoints) reads it
            torch.cuda.set_device(device)
        return DistEnv(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_preference, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return DistEnv(rank, world_size, local_rank, device)


def all_gather_objects(obj: Any, env: DistEnv) -> list[Any]:
    if not env.distributed:
        return [obj]
    out: list[Any] = [None] * env.world_size
    dist.all_gather_object(out, obj)
    return out


def barrier(env: DistEnv) -> None:
    if env.distributed:
        dist.barrier()


def cleanup(env: DistEnv) -> None:
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def max_over_ranks(value: int, env: DistEnv) -> int:
    """The largest ``value`` any rank holds (every rank gets it): lets ranks agree to stop."""
    if not env.distributed:
        return value
    t = torch.tensor([value], dtype=torch.int64, device=env.device if env.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())

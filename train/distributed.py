"""Parallelism applied from outside the model: torchrun process groups, DDP or FSDP wrapping.

Under torchrun (RANK/WORLD_SIZE set) the process group is gloo on CPU and NCCL on GPU. DDP
replicates the model; FSDP (GPU only) shards it. Model code never knows which is used.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, value: float) -> float:
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t.item())


def setup() -> Dist:
    if "RANK" not in os.environ:
        return Dist(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    gpu = torch.cuda.is_available()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if gpu else "gloo")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if gpu:
        torch.cuda.set_device(local)
    return Dist(dist.get_rank(), dist.get_world_size(), local,
                torch.device(f"cuda:{local}" if gpu else "cpu"))


def wrap(model: torch.nn.Module, d: Dist, strategy: str = "auto") -> torch.nn.Module:
    """The model as the loop should call it (DDP / FSDP under torchrun, else itself)."""
    if d.world == 1:
        return model
    if strategy == "fsdp":
        if d.device.type != "cuda":
            raise ValueError("FSDP needs GPUs; use strategy ddp on CPU")
        from torch.distributed.fsdp import FullyShardedDataParallel

        return FullyShardedDataParallel(model, use_orig_params=True)
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[d.local_rank] if d.device.type == "cuda"
                                   else None, find_unused_parameters=False)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

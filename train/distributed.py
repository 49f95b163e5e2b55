"""Parallelism applied from outside the model: torchrun process groups, DDP or FSDP wrapping,
gradient clipping that knows about shards, and the collectives the loop needs.

Under torchrun (RANK/WORLD_SIZE set) the process group is gloo on CPU and NCCL on GPU.
- ddp: the model is replicated; gradients are averaged in the backward of a step's last
  micro-batch (`no_sync` before it).
- fsdp: FSDP2 (`fully_shard`) — each LLM decoder layer (the classes the model lists in
  `_no_split_modules`, e.g. LlamaDecoderLayer) is its own shard unit, the rest (embeddings,
  vision tower, projector, head) is the root unit. Works on CPU with gloo as on GPU with NCCL.
  Gradients are reduce-scattered after every micro-batch (sharded accumulation, no full-size
  gradient buffer); clipping takes the norm over all shards (`clip_grad_norm`).
Model code never knows which is used: the loop calls `TrainForward`, which wraps the VLM.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def all_sum(self, *values: float) -> list[float]:
        """Each value summed over ranks (one all_reduce for all of them)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def all_gather(self, value: int) -> list[int]:
        """One integer from every rank, in rank order."""
        if self.world == 1:
            return [value]
        t = torch.tensor([value], dtype=torch.int64, device=self.device)
        out = [torch.zeros_like(t) for _ in range(self.world)]
        dist.all_gather(out, t)
        return [int(x.item()) for x in out]


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


class TrainForward(nn.Module):
    """The VLM as the loop runs it: logits plus a zero-valued term that touches every trained
    vision/projector parameter when a micro-batch has no image.

    Why: a text-only micro-batch never calls the projector, so its parameters get no gradient
    on that rank while another rank's do — DDP (find_unused_parameters=False) and FSDP's
    reduce-scatter then wait on collectives that never match. `find_unused_parameters=True`
    would fix DDP only, costs a graph traversal every step, and not FSDP. A projector (and
    tower) pass on one blank image, weighted by zero, gives every rank the same parameters
    with gradient 0 on text-only batches, for a small forward. It is applied whatever the
    world size, so 1 rank and N ranks run the same optimizer update (AdamW moves a parameter
    with a zero gradient, but skips one without a gradient)."""

    def __init__(self, vlm: nn.Module):
        super().__init__()
        self.vlm = vlm

    def _needs_touch(self) -> bool:
        return any(p.requires_grad for part in (self.vlm.projector, self.vlm.vision)
                   for p in part.parameters())

    def forward(self, input_ids, pixels=None, attention_mask=None, position_ids=None):
        logits = self.vlm(input_ids, pixels, attention_mask, position_ids)
        touch = logits.new_zeros(())
        if (pixels is None or len(pixels) == 0) and self._needs_touch():
            size = self.vlm.vision.image_size
            blank = torch.zeros(1, 3, size, size, device=input_ids.device)
            touch = self.vlm.image_features(blank).float().sum() * 0.0
        return logits, touch


@dataclass
class Parallel:
    """What the loop needs: the callable (`fwd`), the unwrapped `root` (state-dict names are
    "vlm." + the VLM's own) and the VLM for parameter lists."""
    fwd: nn.Module
    root: TrainForward
    strategy: str

    @property
    def model(self) -> nn.Module:
        return self.root.vlm

    def sync(self, last: bool):
        """DDP: all-reduce gradients only in a step's last micro-batch's backward."""
        if self.strategy == "ddp" and not last:
            return self.fwd.no_sync()
        return contextlib.nullcontext()


def wrap(model: nn.Module, d: Dist, strategy: str = "auto") -> Parallel:
    """The model as the loop should call it (DDP / FSDP under torchrun, else itself)."""
    root = TrainForward(model)
    if d.world == 1:
        return Parallel(root, root, "none")
    if strategy == "fsdp":
        return Parallel(_fully_shard(root), root, "fsdp")
    from torch.nn.parallel import DistributedDataParallel

    # every trained parameter gets a gradient in every micro-batch (TrainForward), so DDP
    # need not search the graph for unused ones
    ddp = DistributedDataParallel(root, device_ids=[d.local_rank] if d.device.type == "cuda"
                                  else None, find_unused_parameters=False)
    return Parallel(ddp, root, "ddp")


def _fully_shard(root: TrainForward) -> TrainForward:
    from torch.distributed.fsdp import fully_shard

    llm = root.vlm.llm
    layer_types = set(getattr(llm, "_no_split_modules", None) or [])
    if hasattr(llm, "get_base_model"):          # peft LoRA wrapper
        layer_types |= set(getattr(llm.get_base_model(), "_no_split_modules", None) or [])
    layers = [m for m in llm.modules() if type(m).__name__ in layer_types]
    if not layers:
        raise ValueError(f"FSDP: {type(llm).__name__} names no decoder layer class "
                         "(_no_split_modules) to shard by")
    for layer in layers:
        fully_shard(layer)
    # bf16 on GPU comes from the loop's autocast, as with DDP; parameters stay fp32 shards
    return fully_shard(root)


def clip_grad_norm(params: list[nn.Parameter], max_norm: float) -> float:
    """Clip by the norm of the whole gradient. FSDP's gradients are DTensor shards: the norm is
    reduced over all of them (`full_tensor`), never one rank's slice."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = torch.nn.utils.get_total_norm(grads)
    if hasattr(total, "full_tensor"):
        total = total.full_tensor()
    torch.nn.utils.clip_grads_with_norm_(params, max_norm, total)
    return float(total)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()

"""torchrun support: process group set-up, rank helpers, reductions (gloo on CPU, nccl on CUDA)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist


@dataclass
class DistInfo:
    """Where this process stands: rank among world_size, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when started by torchrun (``WORLD_SIZE`` > 1); else single process."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo()
    info = DistInfo(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(info.local_rank)
        # Rank 0 scores the validation set (COCOeval) while the others wait: allow long ones.
        dist.init_process_group(backend=backend, timeout=timedelta(hours=2))
    return info


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def all_reduce_mean(
    values: dict[str, float], info: DistInfo, device: torch.device
) -> dict[str, float]:
    """Mean of each value over ranks (identity without distribution)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(tensor)
    return {k: float(v) / info.world_size for k, v in zip(keys, tensor.tolist(), strict=True)}


def average_gradients(parameters: list[torch.nn.Parameter], info: DistInfo) -> None:
    """Average ``.grad`` over ranks for parameters outside the DDP module (learned task weights)."""
    if not info.enabled:
        return
    for parameter in parameters:
        if parameter.grad is not None:
            dist.all_reduce(parameter.grad)
            parameter.grad /= info.world_size


def any_rank(flag: bool | torch.Tensor, info: DistInfo, device: torch.device) -> bool:
    """True if ``flag`` (a bool, or a 0-dim tensor already on ``device``) is true on any rank
    (so all ranks take the same branch); one host read of a device value either way."""
    if not info.enabled:
        return bool(flag)
    if isinstance(flag, torch.Tensor):
        tensor = flag.reshape(1).to(device=device, dtype=torch.float32)
    else:
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def tensors_in_sync(tensors: list[torch.Tensor], info: DistInfo, device: torch.device) -> bool:
    """Whether every rank holds exactly the same tensors (compares float64 checksums; NaN equals
    NaN: state such as FAMO's last losses marks an absent task with NaN on every rank)."""
    if not info.enabled or not tensors:
        return True
    checksum = torch.stack([t.detach().double().sum().to(device) for t in tensors])
    gathered = [torch.zeros_like(checksum) for _ in range(info.world_size)]
    dist.all_gather(gathered, checksum)
    return all(
        torch.allclose(gathered[0], other, rtol=0, atol=0, equal_nan=True) for other in gathered[1:]
    )


def gather_objects(value: Any, info: DistInfo) -> list[Any]:
    """``value`` of every rank, in rank order, on every rank (``[value]`` without distribution);
    picklable plain data only (e.g. RNG states)."""
    if not info.enabled:
        return [value]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, value)
    return gathered


def gather_to_main(value: Any, info: DistInfo) -> list[Any] | None:
    """``value`` of every rank, in rank order, on rank 0 only (None on the others; ``[value]``
    without distribution); picklable data (e.g. a validation shard's predictions)."""
    if not info.enabled:
        return [value]
    gathered: list[Any] | None = [None] * info.world_size if info.is_main else None
    dist.gather_object(value, gathered, dst=0)
    return gathered


def broadcast_buffers_from_main(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, in place: after its last
    training forward each rank holds the statistics of its own batch."""
    if info.enabled:
        for buffer in module.buffers():
            dist.broadcast(buffer, src=0)


def broadcast_from_main(value: Any, info: DistInfo) -> Any:
    """Rank 0's ``value`` on every rank (``value`` itself without distribution): a decision taken
    once, e.g. the run directory; picklable plain data only."""
    if not info.enabled:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=0)
    return box[0]

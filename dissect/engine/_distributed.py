"""torch.distributed helpers: rank/world, start under torchrun, exact merges of statistics."""

from __future__ import annotations

import copy
import os
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1


def dist_info() -> DistInfo:
    """The current process group's rank and size (0 / 1 when torch.distributed is not initialised)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return DistInfo()


def init_from_env(device: str) -> DistInfo:
    """Initialise torch.distributed when started by torchrun (WORLD_SIZE > 1): nccl on cuda, gloo on cpu."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or not dist.is_available():
        return dist_info()
    if not dist.is_initialized():
        local = int(os.environ.get("LOCAL_RANK", "0"))
        use_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
        if use_cuda:
            torch.cuda.set_device(local)
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return dist_info()


def shard(n: int, info: DistInfo) -> tuple[int, int]:
    """Contiguous [start, stop) of ``n`` items for this rank (the first ranks get one more when uneven)."""
    base, extra = divmod(n, info.world)
    start = info.rank * base + min(info.rank, extra)
    return start, start + base + (1 if info.rank < extra else 0)


def gather_states(state: dict, info: DistInfo) -> list:
    """Every rank's ``state`` (CPU tensors), in rank order, on every rank."""
    if not info.active:
        return [state]
    import torch.distributed as dist

    out: list = [None] * info.world
    dist.all_gather_object(out, state)
    return out


def sync(stat, info: DistInfo) -> None:
    """Combine one statistic over all ranks, in place, as its ``reduction`` declares (see
    dissect.stats.protocol): "sum" all-reduces the state entries in ``sum_keys`` (int64, exact);
    "gather" loads rank 0's state and merges every other rank's in rank order."""
    if not info.active:
        return
    if stat.reduction == "sum":
        state = stat.state_dict()
        counts = [torch.as_tensor(state[k], dtype=torch.long) if state[k] is not None else None for k in stat.sum_keys]
        all_reduce_sum_(counts, stat.device)
        for k, t in zip(stat.sum_keys, counts):
            if t is not None:
                state[k] = int(t) if t.dim() == 0 else t
        stat.load_state_dict(state)
    elif stat.reduction == "gather":
        states = gather_states(stat.state_dict(), info)
        stat.load_state_dict(states[0])
        for s in states[1:]:
            other = copy.copy(stat)  # load_state_dict rebinds every field: stat is untouched
            other.load_state_dict(s)
            stat.merge(other)
    else:
        raise ValueError(f"{type(stat).__name__} declares unknown reduction {stat.reduction!r}")


def all_reduce_sum_(tensors: list, device) -> None:
    """Sum integer count tensors over all ranks, in place (exact: int64)."""
    import torch.distributed as dist

    if not dist_info().active:
        return
    for t in tensors:
        if t is None:
            continue
        buf = t.to(device)
        dist.all_reduce(buf, op=dist.ReduceOp.SUM)
        t.copy_(buf.to(t.device))


def barrier() -> None:
    import torch.distributed as dist

    if dist_info().active:
        dist.barrier()

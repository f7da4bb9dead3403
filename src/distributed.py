"""torchrun support: the process group from the environment, one `is_main` flag, per-rank samples, collectives.

Single-process runs use the same code with world size 1, where every collective is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if torch.cuda.is_available() else torch.device("cpu")


def init_distributed() -> Dist:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK (nccl on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist()
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)))
    if not dist.is_initialized():
        if torch.cuda.is_available():
            torch.cuda.set_device(d.local_rank)
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return d


def finish(d: Dist) -> None:
    """Wait for every rank, then leave the process group (a rank exiting early can abort its peers)."""
    if d.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def all_true(flag: bool, d: Dist) -> bool:
    """True only if `flag` is true on every rank, so that every rank takes the same branch."""
    if d.world == 1:
        return flag
    t = torch.tensor(int(flag), device=d.device)
    dist.all_reduce(t, op=dist.ReduceOp.MIN)
    return bool(t.item())


def any_true(flag: bool, d: Dist) -> bool:
    return not all_true(not flag, d)


def broadcast(obj, d: Dist):
    """Rank 0's `obj` on every rank."""
    if d.world == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, d: Dist) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj)
    return out


def epoch_indices(n: int, epoch: int, seed: int, d: Dist, batch: int | None) -> list[int]:
    """This rank's sample order for one epoch.

    Train (`batch` = pairs per rank and step): one seeded shuffle per epoch shared by all ranks, cut to whole
    global batches and dealt round-robin. Val (`batch` None): every index exactly once over all ranks, in order.
    """
    if batch is None:
        return list(range(d.rank, n, d.world))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    usable = n // (batch * d.world) * batch * d.world
    return order[:usable][d.rank::d.world]

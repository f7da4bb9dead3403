"""torchrun support: the process group from the environment, one `is_main` flag, per-rank samples, collectives.

Single-process runs use the same code with world size 1, where every collective is a no-op.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist

from src.common.logs import UserError


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    cpu: bool = False  # gloo on the CPU even where CUDA exists (src.bench_train --nproc)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def device(self) -> torch.device:
        """cuda:LOCAL_RANK, or cuda:0 where the scheduler shows each process a single GPU; the CPU without CUDA."""
        if self.cpu or not torch.cuda.is_available():
            return torch.device("cpu")
        count = torch.cuda.device_count()
        if count > 1 and self.local_rank >= count:
            raise UserError(f"LOCAL_RANK {self.local_rank} but this process sees only {count} GPUs: start at most "
                               f"{count} processes per node (torchrun --nproc_per_node={count})")
        return torch.device("cuda", self.local_rank if count > 1 else 0)


def init_distributed(cpu: bool = False) -> Dist:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK (nccl on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist(cpu=cpu)
    d = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), cpu)
    if not dist.is_initialized():
        if d.device.type == "cuda":
            torch.cuda.set_device(d.device)
        dist.init_process_group("nccl" if d.device.type == "cuda" else "gloo")
    return d


def finish(d: Dist) -> None:
    """Wait for every rank, then leave the process group (a rank exiting early can abort its peers)."""
    if d.world > 1 and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    """Every rank waits here until all have arrived."""
    if d.world > 1:
        dist.barrier()


def leave(d: Dist) -> None:
    """Leave the process group without waiting (an error every rank raised together)."""
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def all_true(flags: torch.Tensor, d: Dist) -> list[bool]:
    """Each of `flags` (a bool tensor) true on every rank: one all-reduce, one read, the same answer everywhere."""
    if d.world > 1:
        flags = flags.to(d.device, torch.int32)
        dist.all_reduce(flags, op=dist.ReduceOp.MIN)
    return [bool(f) for f in flags.tolist()]


def any_true(flag: bool, d: Dist) -> bool:
    return not all_true(torch.tensor([not flag]), d)[0]


def sync_buffers(model: torch.nn.Module, d: Dist) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: each rank then evaluates the model rank 0 saves."""
    if d.world > 1:
        for b in model.buffers():
            dist.broadcast(b, 0)


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


HOST_WAIT = timedelta(days=7)  # longer than any run: when a rank dies, torchrun stops the others, not a timeout
_host_groups: dict = {}  # default process group -> its gloo group for host-side waits


def _host_group() -> dist.ProcessGroup:
    """A gloo group over every rank with a HOST_WAIT timeout, made by every rank on its first host-side wait."""
    world = dist.group.WORLD
    if world not in _host_groups:
        _host_groups[world] = dist.new_group(backend="gloo", timeout=HOST_WAIT)
    return _host_groups[world]


def host_barrier(d: Dist) -> None:
    """Wait for every rank however long the slowest takes (uneven shards of videos): on a gloo group whose timeout
    is HOST_WAIT, not on NCCL, whose watchdog ends a rank that waits past its collective timeout (10 minutes)."""
    if d.world > 1:
        dist.barrier(group=_host_group())


def host_gather(obj, d: Dist) -> list:
    """`gather` for small Python objects after uneven work: waits like `host_barrier`."""
    if d.world == 1:
        return [obj]
    out = [None] * d.world
    dist.all_gather_object(out, obj, group=_host_group())
    return out

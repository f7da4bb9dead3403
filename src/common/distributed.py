"""torchrun support: the process group from the environment, one `is_main` flag, per-rank samples, collectives.

Single-process runs use the same code with world size 1, where every collective is a no-op.
"""
from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as td

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


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (for a process group's rendezvous)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def init_distributed(cpu: bool = False) -> Dist:
    """Join the process group torchrun describes in RANK/WORLD_SIZE/LOCAL_RANK (nccl on GPUs, gloo on CPUs)."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", 1)) == 1:
        return Dist(cpu=cpu)
    dist = Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ.get("LOCAL_RANK", 0)), cpu)
    if not td.is_initialized():
        if dist.device.type == "cuda":
            torch.cuda.set_device(dist.device)
        td.init_process_group("nccl" if dist.device.type == "cuda" else "gloo")
    return dist


def finish(dist: Dist) -> None:
    """Wait for every rank, then leave the process group (a rank exiting early can abort its peers)."""
    if dist.world > 1 and td.is_initialized():
        td.barrier()
        td.destroy_process_group()


def barrier(dist: Dist) -> None:
    """Every rank waits here until all have arrived."""
    if dist.world > 1:
        td.barrier()


def leave(dist: Dist) -> None:
    """Leave the process group without waiting (an error every rank raised together)."""
    if dist.world > 1 and td.is_initialized():
        td.destroy_process_group()


def all_true(flags: torch.Tensor, dist: Dist) -> list[bool]:
    """Each of `flags` (a bool tensor) true on every rank: one all-reduce, one read, the same answer everywhere."""
    if dist.world > 1:
        flags = flags.to(dist.device, torch.int32)
        td.all_reduce(flags, op=td.ReduceOp.MIN)
    return [bool(f) for f in flags.tolist()]


def any_true(flag: bool, dist: Dist) -> bool:
    return not all_true(torch.tensor([not flag]), dist)[0]


def sync_buffers(model: torch.nn.Module, dist: Dist) -> None:
    """Rank 0's buffers (BatchNorm statistics) on every rank: each rank then evaluates the model rank 0 saves."""
    if dist.world > 1:
        for b in model.buffers():
            td.broadcast(b, 0)


def broadcast(obj, dist: Dist):
    """Rank 0's `obj` on every rank."""
    if dist.world == 1:
        return obj
    box = [obj]
    td.broadcast_object_list(box, src=0)
    return box[0]


def gather(obj, dist: Dist) -> list:
    """Every rank's `obj`, in rank order, on every rank."""
    if dist.world == 1:
        return [obj]
    out = [None] * dist.world
    td.all_gather_object(out, obj)
    return out


def epoch_indices(n: int, epoch: int, seed: int, dist: Dist, batch: int | None) -> list[int]:
    """This rank's sample order for one epoch.

    Train (`batch` = pairs per rank and step): one seeded shuffle per epoch shared by all ranks, cut to whole
    global batches and dealt round-robin. Val (`batch` None): every index exactly once over all ranks, in order.
    """
    if batch is None:
        return list(range(dist.rank, n, dist.world))
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch)).tolist()
    usable = n // (batch * dist.world) * batch * dist.world
    return order[:usable][dist.rank::dist.world]


HOST_WAIT = timedelta(days=7)  # longer than any run: when a rank dies, torchrun stops the others, not a timeout
_host_groups: dict = {}  # default process group -> its gloo group for host-side waits


def _host_group() -> td.ProcessGroup:
    """A gloo group over every rank with a HOST_WAIT timeout, made by every rank on its first host-side wait."""
    world = td.group.WORLD
    if world not in _host_groups:
        _host_groups[world] = td.new_group(backend="gloo", timeout=HOST_WAIT)
    return _host_groups[world]


def host_barrier(dist: Dist) -> None:
    """Wait for every rank however long the slowest takes (uneven shards of videos): on a gloo group whose timeout
    is HOST_WAIT, not on NCCL, whose watchdog ends a rank that waits past its collective timeout (10 minutes)."""
    if dist.world > 1:
        td.barrier(group=_host_group())


def host_gather(obj, dist: Dist) -> list:
    """`gather` for small Python objects after uneven work: waits like `host_barrier`."""
    if dist.world == 1:
        return [obj]
    out = [None] * dist.world
    td.all_gather_object(out, obj, group=_host_group())
    return out

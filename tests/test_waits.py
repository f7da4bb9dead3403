"""Host-side waits under torchrun: a rank that finished its share of the videos long before the slowest one waits
past the process group's collective timeout without being ended (src.evaluate, src.preprocess)."""
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import torch
import torch.distributed as td

from src.common.distributed import Dist, free_port, host_barrier, host_gather

TIMEOUT_S, LATE_S = 2, 6  # the default group's timeout, and how much later than the others one rank arrives


def _uneven_rank(rank: int, world: int, port: int) -> list:
    torch.set_num_threads(1)
    td.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world,
                            timeout=timedelta(seconds=TIMEOUT_S))
    dist = Dist(rank, world, rank, cpu=True)
    try:
        if rank == 1:  # a long shard: every other rank waits for it at the barrier
            time.sleep(LATE_S)
        host_barrier(dist)
        if rank == 0:  # then the other ranks wait at the gather
            time.sleep(LATE_S)
        return host_gather({"rank": rank}, dist)
    finally:
        td.destroy_process_group()


def test_host_waits_outlast_the_collective_timeout():
    world, port = 3, free_port()
    with ProcessPoolExecutor(world, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = [pool.submit(_uneven_rank, rank, world, port) for rank in range(world)]
        results = [job.result(timeout=120) for job in jobs]
    assert results == [[{"rank": r} for r in range(world)]] * world

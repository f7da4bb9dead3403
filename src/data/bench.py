"""SBI data-pipeline throughput: pairs per second in one process and through DataLoader workers, time per stage."""
from __future__ import annotations

import time
from collections import defaultdict

from torch.utils.data import DataLoader

from src.data.dataset import SBIDataset, collate_pairs

STAGES = ("decode", "crops", "blend", "augment", "resize", "collate")


def one_process(dataset: SBIDataset, pairs: int, batch: int) -> tuple[float, dict]:
    """Pairs per second made in this process (items plus collate), and seconds per pair for each stage."""
    dataset.profile = defaultdict(float)
    for i in range(min(4, len(dataset))):  # warm-up: first-call costs of OpenCV and albumentations
        dataset[i]
    dataset.profile.clear()
    start = time.perf_counter()
    done = 0
    while done < pairs:
        items = [dataset[(done + j) % len(dataset)] for j in range(batch)]
        t = time.perf_counter()
        collate_pairs(items)
        dataset.profile["collate"] += time.perf_counter() - t
        done += batch
    seconds = time.perf_counter() - start
    profile = {k: dataset.profile[k] / done for k in STAGES}
    dataset.profile = None
    return done / seconds, profile


def with_workers(dataset: SBIDataset, workers: int, pairs: int, batch: int) -> float:
    """Pairs per second through a DataLoader with `workers` processes, worker start-up included."""
    start = time.perf_counter()
    loader = DataLoader(dataset, batch_size=batch, sampler=[i % len(dataset) for i in range(pairs)],
                        num_workers=workers, collate_fn=collate_pairs)
    done = sum(len(b["labels"]) // 2 for b in loader)
    return done / (time.perf_counter() - start)

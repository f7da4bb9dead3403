"""A worker process's set-up: one thread each for torch, OpenCV and FFmpeg, so N workers keep N cores busy."""
import os

import cv2


def one_thread(worker_id: int = 0) -> None:
    """A worker process computes with one torch thread and decodes with one FFmpeg thread (OpenCV reads
    OPENCV_FFMPEG_THREADS at each open; by default it starts one decoding thread per core): N workers keep N cores
    busy, not N x N. OpenCV's own count is set by the parent before it forks: `fork_safe_opencv`."""
    import torch  # noqa: PLC0415 (the dlib path needs no torch)

    torch.set_num_threads(1)
    os.environ["OPENCV_FFMPEG_THREADS"] = "1"


def fork_safe_opencv() -> None:
    """One OpenCV thread in this process, before it forks workers. A forked child hangs when it stops or uses the
    thread pool of a parent that had started one; with one thread OpenCV runs serially everywhere (and N workers
    keep N cores busy, not N x cores)."""
    cv2.setNumThreads(1)

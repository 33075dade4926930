"""How both synthetic sets write: files moved into place whole, JPEGs at q95 4:4:4, work in processes.

Every file is written under a temporary name and moved into place with :func:`os.replace`, so an
interrupted run never leaves a half-written file. Images (clips) are independent and each has its
own random stream, so worker processes render them and the bytes do not depend on how many.
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence, TypeVar

import numpy as np
from PIL import Image

JPEG_QUALITY = 95

_Job = TypeVar("_Job")
_Result = TypeVar("_Result")


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


def _save_jpeg(path: Path, image: np.ndarray) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    # 4:4:4 chroma: the default 4:2:0 would smear the colour of small objects across their edges
    Image.fromarray(image, mode="RGB").save(tmp, format="JPEG", quality=JPEG_QUALITY, subsampling=0)
    os.replace(tmp, path)


def _auto_workers(n_images: int) -> int:
    """Two processes for big runs, where fork exists (no re-import of the caller's script)."""
    import multiprocessing

    if n_images < 200 or "fork" not in multiprocessing.get_all_start_methods():
        return 1
    if multiprocessing.current_process().daemon:  # daemonic processes cannot have children
        return 1
    return max(1, min(2, os.cpu_count() or 1))


@contextmanager
def _results_in_order(
    work: Callable[[_Job], _Result], jobs: Sequence[_Job], workers: int, chunksize: int, bar: Any
) -> Iterator[Iterator[_Result]]:
    """``work(job)`` for every job, in order, here (``workers == 1``) or in a process pool; ``bar``
    ticks once per result and is closed, and the pool shut down, when the block is left."""
    pool = None
    if workers == 1:
        results = map(work, jobs)
    else:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        # fork (Linux) needs no re-import of the caller's __main__; the workers use only numpy,
        # PIL and pycocotools. Elsewhere spawn (the caller then needs the usual __main__ guard).
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
        results = pool.map(work, jobs, chunksize=chunksize)

    def ticking() -> Iterator[_Result]:
        for result in results:
            yield result
            bar.update(1)

    try:
        yield ticking()
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)

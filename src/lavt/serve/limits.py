"""What one `lavt serve` process accepts, and the gate that runs one inference at a time.

A CPU machine serving a transformer survives only if work is bounded before it starts: uploads
are capped in bytes before they are read, images in pixels before they are decoded, videos in
frames and seconds, requests in expressions; and at most one inference runs per loaded model
while at most ``queue_size`` requests wait. A request beyond that is refused at once with
:class:`ServerBusy` (HTTP 503, "busy, retry") instead of piling up threads and memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass

from ..errors import InputError


class ServerBusy(RuntimeError):
    """The queue is full, or a request waited longer than its timeout: retry later (HTTP 503)."""


@dataclass(frozen=True)
class Limits:
    """Per-request limits (every one can be set on the ``lavt serve`` command line)."""

    max_upload_mb: float = 25.0  # bytes of one uploaded file
    max_pixels: int = 16_000_000  # width x height of an image or a video frame (4000 x 4000)
    max_expressions: int = 8  # expressions per request
    max_expression_chars: int = 500
    max_video_frames: int = 240  # frames read from a video (the rest is refused, not cut)
    max_video_seconds: float = 60.0  # frames / fps of a video
    queue_size: int = 4  # requests waiting while one runs; more get 503
    timeout_s: float = 120.0  # how long a request may wait for its turn

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not value > 0:
                raise InputError(f"serve limit {name} must be positive, got {value}")

    @property
    def max_upload_bytes(self) -> int:
        return int(self.max_upload_mb * 1024 * 1024)

    def check_upload_size(self, size: int, name: str = "upload") -> None:
        if size > self.max_upload_bytes:
            raise InputError(f"{name} is {size / 2**20:.1f} MB; this server accepts at most {self.max_upload_mb:g} MB")

    def check_pixels(self, width: int, height: int, what: str = "image") -> None:
        if width * height > self.max_pixels:
            raise InputError(
                f"{what} is {width}x{height} = {width * height:,} pixels; this server accepts at most "
                f"{self.max_pixels:,}"
            )

    def check_expressions(self, expressions: list[str]) -> list[str]:
        """Non-blank, trimmed, within the count and length limits (an InputError names the problem)."""
        texts = [t.strip() for t in expressions if t.strip()]
        if not texts:
            raise InputError("no expression given: type one per line")
        if len(texts) > self.max_expressions:
            raise InputError(f"{len(texts)} expressions; this server accepts at most {self.max_expressions} per request")
        for i, t in enumerate(texts):
            if len(t) > self.max_expression_chars:
                raise InputError(f"expression {i + 1} has {len(t)} characters; at most {self.max_expression_chars}")
        return texts


class InferenceGate:
    """One inference at a time; at most ``queue_size`` waiting; a wait longer than ``timeout_s``
    gives up. Counters (``served``, ``rejected``, ``timed_out``) feed ``GET /health``."""

    def __init__(self, queue_size: int, timeout_s: float) -> None:
        self.queue_size = queue_size
        self.timeout_s = timeout_s
        self._run = threading.Lock()
        self._state = threading.Lock()
        self.waiting = 0
        self.running = False
        self.served = 0
        self.rejected = 0
        self.timed_out = 0

    @contextmanager
    def turn(self) -> Iterator[float]:
        """Wait for the model; yields the seconds waited. Raises ServerBusy when full or too late."""
        with self._state:
            if self.waiting >= self.queue_size:
                self.rejected += 1
                raise ServerBusy(f"busy: {self.waiting} requests are already waiting; retry in a few seconds")
            self.waiting += 1
        start = time.perf_counter()
        got = self._run.acquire(timeout=self.timeout_s)
        with self._state:
            self.waiting -= 1
            if not got:
                self.timed_out += 1
        if not got:
            raise ServerBusy(f"busy: no turn within {self.timeout_s:g} s; retry later")
        try:
            with self._state:
                self.running = True
            yield time.perf_counter() - start
        finally:
            with self._state:
                self.running = False
                self.served += 1
            self._run.release()

    def stats(self) -> dict[str, int | bool]:
        with self._state:
            return {"running": self.running, "waiting": self.waiting, "served": self.served,
                    "rejected": self.rejected, "timed_out": self.timed_out, "queue_size": self.queue_size}

"""Reading videos for inference and writing overlay animations.

A video is given as

* a directory of frames (``.jpg`` / ``.jpeg`` / ``.png``, the Ref-YouTube-VOS layout), in
  natural name order (``f2`` before ``f10``; zero-padded names sort as usual); frame names are
  the file stems;
* an animated image (GIF, WebP, APNG...) read with Pillow; a still image is a one-frame video;
* a video file (mp4, avi, mov, webm, mkv, ...) decoded with PyAV, the optional ``video`` extra
  (``pip install av`` or ``pip install 'lavt[video]'``). The container's display rotation
  (phone videos) is applied, so masks match what players show.

Frames of animations and video files are named ``00000``, ``00001``, ... Every problem with
the input (missing path, nothing to read, an undecodable file or frame, frames of different
sizes) raises a one-line :class:`lavt.errors.InputError` naming the file.

>>> from lavt.io.videos import load_video
>>> frames, names, fps = load_video("clip.mp4", max_frames=100)   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from ..errors import InputError

FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")  # frames inside a directory
IMAGE_SUFFIXES = (".gif", ".webp", ".png", ".apng", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff")  # read with Pillow
DEFAULT_FPS = 10.0  # for overlays of frame directories, whose rate is unknown
_INSTALL_AV = "pip install av (or pip install 'lavt[video]')"


def _one_line(text: object) -> str:
    return " ".join(str(text).split()) or "unknown error"


def _natural_key(name: str) -> tuple[list[Any], str]:
    parts = [int(p) if p.isdigit() else p.lower() for p in re.split(r"(\d+)", name)]
    return [(0, p) if isinstance(p, int) else (1, p) for p in parts], name


def _check_max_frames(max_frames: int | None) -> int | None:
    if max_frames is None:
        return None
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise InputError(f"max_frames must be a positive integer, got {max_frames!r}")
    return max_frames


def _import_av(path: Path):
    try:
        import av
    except ImportError:
        raise InputError(f"reading video files such as {path.name} needs PyAV: {_INSTALL_AV}") from None
    return av


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------
def load_video(
    source: str | os.PathLike[str], max_frames: int | None = None
) -> tuple[list[Image.Image], list[str], float | None]:
    """``(frames, frame_names, fps)``: RGB PIL frames in order, their names, and the frame rate
    (``None`` for a frame directory or an animation without timing). ``max_frames`` keeps the
    first frames only."""
    limit = _check_max_frames(max_frames)
    if not isinstance(source, (str, os.PathLike)):
        raise InputError(f"expected a video path (file or frame directory), got {type(source).__name__}")
    path = Path(source).expanduser()
    if not path.exists():
        raise InputError(f"video not found: {os.fspath(source)}")
    if path.is_dir():
        frames, names, fps = _load_directory(path, limit)
    elif path.suffix.lower() in IMAGE_SUFFIXES:
        frames, names, fps = _load_animation(path, limit)
    else:
        frames, names, fps = _load_video_file(path, limit)
    if not frames:
        raise InputError(f"no frames could be read from {path}")
    _check_same_size(frames, names, path)
    return frames, names, fps


def _check_same_size(frames: Sequence[Image.Image], names: Sequence[str], source: Path) -> None:
    first = frames[0].size
    for frame, name in zip(frames, names):
        if frame.size != first:
            raise InputError(
                f"frames of {source} have different sizes: {names[0]} is {first[0]}x{first[1]} "
                f"but {name} is {frame.size[0]}x{frame.size[1]} (W x H)"
            )


def _load_directory(path: Path, limit: int | None) -> tuple[list[Image.Image], list[str], None]:
    from .images import (
        load_image,  # the one image reader (EXIF orientation, RGB conversion, errors)
    )

    files = sorted(
        (p for p in path.iterdir() if p.suffix.lower() in FRAME_SUFFIXES and p.is_file()),
        key=lambda p: _natural_key(p.name),
    )
    if not files:
        raise InputError(f"no frames in directory {path} (expected {', '.join(FRAME_SUFFIXES)} files)")
    seen: dict[str, str] = {}
    for p in files:
        if p.stem in seen:
            raise InputError(f"two frames in {path} have the name {p.stem!r}: {seen[p.stem]} and {p.name}")
        seen[p.stem] = p.name
    files = files[:limit] if limit is not None else files
    return [load_image(p) for p in files], [p.stem for p in files], None


def _load_animation(path: Path, limit: int | None) -> tuple[list[Image.Image], list[str], float | None]:
    frames: list[Image.Image] = []
    durations: list[float] = []
    try:
        with Image.open(path) as img:
            n = getattr(img, "n_frames", 1)
            for i in range(n if limit is None else min(n, limit)):
                img.seek(i)
                img.load()
                frame = img.convert("RGB") if n > 1 else ImageOps.exif_transpose(img).convert("RGB")
                frames.append(frame)
                duration = img.info.get("duration")
                if isinstance(duration, (int, float)) and duration > 0:
                    durations.append(float(duration))
    except Image.DecompressionBombError as e:
        raise InputError(f"cannot read video {path}: {_one_line(e)}") from None
    except (OSError, ValueError, EOFError, SyntaxError) as e:  # UnidentifiedImageError is an OSError
        where = f" (frame {len(frames)})" if frames else ""
        raise InputError(f"cannot read video {path}{where}: {_one_line(e)}") from None
    fps = 1000.0 / float(np.mean(durations)) if len(frames) > 1 and durations else None
    return frames, [f"{i:05d}" for i in range(len(frames))], fps


def _load_video_file(path: Path, limit: int | None) -> tuple[list[Image.Image], list[str], float | None]:
    av = _import_av(path)
    frames: list[Image.Image] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise InputError(f"cannot read video {path}: it has no video stream")
            stream = container.streams.video[0]
            rate = stream.average_rate or stream.guessed_rate
            fps = float(rate) if rate else None
            for frame in container.decode(stream):
                frames.append(_upright(frame.to_image(), getattr(frame, "rotation", 0)))
                if limit is not None and len(frames) >= limit:
                    break
    except InputError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        where = f" (after {len(frames)} frames)" if frames else ""
        raise InputError(f"cannot read video {path}{where}: {_one_line(e)}") from None
    return frames, [f"{i:05d}" for i in range(len(frames))], fps


def _upright(image: Image.Image, rotation: Any) -> Image.Image:
    """Apply the container's display rotation (counter-clockwise degrees, PyAV's convention)."""
    try:
        degrees = int(round(float(rotation or 0))) % 360
    except (TypeError, ValueError):
        return image.convert("RGB")
    turn = {90: Image.Transpose.ROTATE_90, 180: Image.Transpose.ROTATE_180, 270: Image.Transpose.ROTATE_270}
    image = image.transpose(turn[degrees]) if degrees in turn else image
    return image.convert("RGB")


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def _frames_for_writing(images: Sequence[Image.Image], path: Path) -> list[Image.Image]:
    frames = [im.convert("RGB") for im in images]
    if not frames:
        raise InputError(f"no frames to write to {path}")
    _check_same_size(frames, [f"frame {i}" for i in range(len(frames))], path)
    return frames


def _check_fps(fps: float | None) -> float:
    if fps is None:
        return DEFAULT_FPS
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not np.isfinite(fps) or fps <= 0:
        raise InputError(f"fps must be a positive number, got {fps!r}")
    return float(fps)


def write_gif(path: str | os.PathLike[str], images: Sequence[Image.Image], fps: float | None = None) -> Path:
    """An animated GIF that loops forever, ``fps`` frames per second (default 10; GIF timing is
    in 1/100 s, so the rate is approximate). Returns the path."""
    out = Path(path)
    frames = _frames_for_writing(images, out)
    duration = max(20, int(round(1000.0 / _check_fps(fps) / 10.0)) * 10)
    out.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(out, save_all=True, append_images=frames[1:], duration=duration, loop=0, optimize=False)
    return out


def write_mp4(path: str | os.PathLike[str], images: Sequence[Image.Image], fps: float | None = None) -> Path:
    """An H.264 MP4 (``libx264``; ``mpeg4`` when this FFmpeg build has no libx264), yuv420p.
    Odd widths/heights are padded by one black pixel (yuv420p needs even sides). Needs PyAV.
    Returns the path."""
    out = Path(path)
    av = _import_av(out)
    frames = _frames_for_writing(images, out)
    rate = Fraction(_check_fps(fps)).limit_denominator(1001)
    width, height = frames[0].size
    even_w, even_h = width + width % 2, height + height % 2
    codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
    out.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(out), mode="w") as container:
        stream = container.add_stream(codec, rate=rate)
        stream.width, stream.height, stream.pix_fmt = even_w, even_h, "yuv420p"
        if codec == "mpeg4":
            stream.bit_rate = 4_000_000
        for image in frames:
            if (even_w, even_h) != (width, height):
                canvas = Image.new("RGB", (even_w, even_h))
                canvas.paste(image, (0, 0))
                image = canvas
            frame = av.VideoFrame.from_image(image)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


def check_frame_names(names: Sequence[str], n: int) -> list[str]:
    out = [str(x) for x in names]
    if len(out) < n:
        raise InputError(f"{len(out)} frame names for {n} frames")
    out = out[:n]
    for name in out:
        if not name or name in (".", "..") or any(c in name for c in "/\\\x00"):
            raise InputError(f"frame name {name!r} is not a plain file name")
    if len(set(out)) != len(out):
        raise InputError("frame names are not unique")
    return out


def have_av() -> bool:
    """Whether PyAV (the ``video`` extra) is importable."""
    try:
        import av  # noqa: F401
    except ImportError:
        return False
    return True


__all__ = ["DEFAULT_FPS", "FRAME_SUFFIXES", "have_av", "load_video", "write_gif", "write_mp4"]

"""The web page (Gradio): an image or a video, expressions one per line, the overlay and the masks.

Every problem with the input (no file, corrupt file, too large, empty expression, queue full)
becomes a readable message on the page (``gr.Error``), never a stack trace. Results go to a
folder per request under the service's work folder; the oldest are deleted beyond
``KEEP_REQUESTS`` so the disk stays bounded.
"""

from __future__ import annotations

import html
import json
import re
import shutil
import tempfile
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from ..errors import InputError
from ..io.outputs import PALETTE, overlay
from .limits import ServerBusy
from .service import Service, mask_png

KEEP_REQUESTS = 64  # request folders kept for download; older ones are deleted
DISPLAY_MIN_WIDTH = 480  # smaller overlays are shown enlarged on the page
UPLOAD_TYPES = [".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".mp4", ".avi", ".mov", ".webm", ".mkv"]


def example_inputs() -> list[list[str]]:
    """The bundled synthetic scenes with their expressions: [[image path, expressions], ...]."""
    folder = resources.files("lavt.serve") / "examples"
    meta = json.loads((folder / "examples.json").read_text())
    return [[str(folder / e["file"]), "\n".join(e["expressions"])] for e in meta["examples"]]


def slug(text: str, limit: int = 40) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:limit] or "expression"


def legend_html(expressions: list[str], areas: list[int], scores: list[float] | None, warnings: list[str]) -> str:
    rows = []
    for k, text in enumerate(expressions):
        r, g, b = PALETTE[k % len(PALETTE)]
        score = f", score {scores[k]:.2f}" if scores is not None else ""
        rows.append(
            f'<li><span style="display:inline-block;width:0.9em;height:0.9em;background:rgb({r},{g},{b});'
            f'margin-right:0.4em"></span><b>{k:02d}</b> {html.escape(text)} — {areas[k]:,} px{score}</li>'
        )
    notes = "".join(f"<li>⚠ {html.escape(w)}</li>" for w in warnings)
    return f'<ul id="lavt-legend" style="list-style:none;padding-left:0">{"".join(rows)}{notes}</ul>'


class RequestFolders:
    """One folder per request under ``root``; keeps the newest ``keep``."""

    def __init__(self, root: Path, keep: int = KEEP_REQUESTS) -> None:
        self.root, self.keep, self.count = Path(root), keep, 0
        self.root.mkdir(parents=True, exist_ok=True)

    def new(self) -> Path:
        self.count += 1
        folder = Path(tempfile.mkdtemp(prefix=f"{self.count:08d}-", dir=self.root))
        old = sorted(p for p in self.root.iterdir() if p.is_dir())
        for p in old[: max(0, len(old) - self.keep)]:
            shutil.rmtree(p, ignore_errors=True)
        return folder


def run_request(service: Service, folders: RequestFolders, upload: str | None, snapshot: str | None,
                text: str, probability_maps: bool) -> tuple[Any, Any, list[str], str]:
    """(overlay image path or None, overlay video path or None, files to download, legend HTML).
    Raises InputError / ServerBusy; the caller turns them into messages on the page."""
    path = upload or snapshot
    if not path:
        raise InputError("upload an image or a video first (or take a webcam / clipboard snapshot)")
    expressions = (text or "").splitlines()
    source = Path(path)
    name = source.name
    out = folders.new()
    files: list[str] = []
    if Service.is_video(source):
        result = service.predict_video(source, expressions, name=name)
        masks_zip = out / "masks.zip"
        with zipfile.ZipFile(masks_zip, "w", zipfile.ZIP_DEFLATED) as z:
            for k, text_k in enumerate(result.expressions):
                for t, frame_name in enumerate(result.frame_names):
                    z.writestr(f"{k:02d}_{slug(text_k)}/{frame_name}.png", mask_png(result.masks[k, t]))
        frames = [overlay(f, result.masks[:, t], result.expressions) for t, f in enumerate(result.frames)]
        video_path = _write_animation(out, frames, result.fps)
        files.append(str(masks_zip))
        legend = legend_html(result.expressions, [int(m.sum()) for m in result.masks], None, result.warnings)
        return None, str(video_path), files, legend
    result = service.predict_image(source, expressions, name=name)
    overlay_path = out / "overlay.png"
    drawn = result.overlay()
    drawn.save(overlay_path)
    for k, (text_k, mask) in enumerate(zip(result.expressions, result.masks)):
        p = out / f"{k:02d}_{slug(text_k)}.png"
        p.write_bytes(mask_png(mask))
        files.append(str(p))
        if probability_maps:
            q = out / f"{k:02d}_{slug(text_k)}_prob.png"
            Image.fromarray(np.clip(np.rint(result.probs[k] * 255), 0, 255).astype(np.uint8), "L").save(q)
            files.append(str(q))
    files.append(str(overlay_path))
    shown = display_copy(drawn, out / "overlay_shown.png") or overlay_path
    return str(shown), None, files, legend_html(result.expressions, result.areas, result.scores, result.warnings)


def display_copy(image: Image.Image, path: Path, min_width: int = DISPLAY_MIN_WIDTH) -> Path | None:
    """An integer-factor nearest-neighbour enlargement for the page when the image is narrower than
    ``min_width`` (small masks stay visible, pixels stay pixels); None when it is wide enough. The
    download keeps the original size."""
    factor = min_width // image.width
    if factor < 2:
        return None
    image.resize((image.width * factor, image.height * factor), Image.NEAREST).save(path)
    return path


def _write_animation(folder: Path, frames: list[Image.Image], fps: float | None) -> Path:
    """MP4 when PyAV is installed (browsers play it), else an animated GIF."""
    from ..io.videos import have_av, write_gif, write_mp4

    if have_av():
        return write_mp4(folder / "overlay.mp4", frames, fps)
    return write_gif(folder / "overlay.gif", frames, fps)


def model_markdown(info: dict[str, Any]) -> str:
    backbone = info["backbone"]
    return (
        f"**Model:** {info['architecture']}, embed dim {backbone['embed_dim']}, depths {backbone['depths']}, "
        f"window {backbone['window_size']}; {info['parameters_m']} M parameters; input {info['input_size']} px; "
        f"text encoder `{info['text_encoder']}`; weights `{info['weights']}`; {info['device']}, {info['precision']}."
    )


def build_ui(service: Service, work: Path):
    """The Gradio Blocks of the page; results are written under ``work``."""
    import gradio as gr

    folders = RequestFolders(work)
    info = service.model_info()
    lim = service.limits

    def segment(upload, snapshot, text, probability_maps):
        try:
            image, video, files, legend = run_request(service, folders, upload, snapshot, text, probability_maps)
        except (InputError, ServerBusy) as e:
            raise gr.Error(str(e), print_exception=False) from None
        return (gr.update(value=image, visible=image is not None), gr.update(value=video, visible=video is not None),
                files, legend)

    with gr.Blocks(title="lavt — referring segmentation") as ui:
        gr.Markdown(
            "# lavt — referring segmentation\nUpload an image or a video and describe objects in English, "
            "one expression per line: each gets its mask and its colour.\n\n" + model_markdown(info)
        )
        with gr.Row():
            with gr.Column():
                with gr.Tab("Upload"):
                    upload = gr.File(label="Image or video", file_types=UPLOAD_TYPES, type="filepath",
                                     elem_id="lavt-upload")
                with gr.Tab("Webcam / clipboard"):
                    snapshot = gr.Image(label="Image", sources=["webcam", "clipboard"], type="filepath",
                                        elem_id="lavt-snapshot")
                text = gr.Textbox(label="Expressions, one per line", lines=3, elem_id="lavt-expressions",
                                  placeholder="the dog on the left\nthe red car")
                probability_maps = gr.Checkbox(label="Also give the probability maps (PNG, 0-255)", value=False)
                run = gr.Button("Segment", variant="primary", elem_id="lavt-run")
                gr.Markdown(
                    f"Limits: {lim.max_upload_mb:g} MB per file, {lim.max_pixels:,} pixels, "
                    f"{lim.max_expressions} expressions, videos up to {lim.max_video_frames} frames / "
                    f"{lim.max_video_seconds:g} s. One request runs at a time; when {lim.queue_size} wait, "
                    "new ones are asked to retry."
                )
                gr.Examples(example_inputs(), inputs=[upload, text], label="Examples (synthetic scenes)")
            with gr.Column():
                overlay_image = gr.Image(label="Overlay", type="filepath", interactive=False, elem_id="lavt-overlay",
                                         height=480)
                overlay_video = gr.Video(label="Overlay video", interactive=False, visible=False,
                                         elem_id="lavt-overlay-video")
                legend = gr.HTML(elem_id="lavt-legend-box")
                downloads = gr.File(label="Masks (PNG, one per expression) / per-frame masks (zip)",
                                    file_count="multiple", interactive=False, elem_id="lavt-masks")
        with gr.Accordion("What is loaded", open=False):
            gr.JSON(info)
        run.click(segment, inputs=[upload, snapshot, text, probability_maps],
                  outputs=[overlay_image, overlay_video, downloads, legend], api_name="segment",
                  concurrency_limit=1)
    ui.queue(max_size=lim.queue_size, default_concurrency_limit=1)
    return ui


__all__ = ["build_ui", "run_request", "example_inputs", "legend_html", "RequestFolders"]

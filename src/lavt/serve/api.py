"""The HTTP API for programs (FastAPI; the web page is mounted beside it by :mod:`lavt.serve.app`).

``GET /health``   -> ``{"status": "ok", "queue": {...}}`` (running, waiting, served, rejected)
``GET /model``    -> what is loaded (:meth:`Service.model_info`)
``POST /predict`` -> multipart ``image`` (a file) + ``expressions`` (a form field, repeated or one
                     expression per line) [+ ``png=true``: each mask also as a base64 PNG]

``/predict`` answers, per expression, the mask as COCO RLE (``pycocotools.mask.encode``; decode with
``pycocotools.mask.decode``), its area in pixels and its score (mean object probability inside the
mask). Bad input is HTTP 400 / 413 with ``{"error": "<one line>"}``; a full queue is HTTP 503 with
``Retry-After``.
"""

# no `from __future__ import annotations`: FastAPI reads the route annotations at run time

import base64
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from .limits import ServerBusy
from .service import Service, mask_png

MULTIPART_SLACK = 64 * 1024  # form fields and boundaries around the file


def rle(mask: np.ndarray) -> dict[str, Any]:
    """COCO run-length encoding of one (H, W) bool mask, JSON-ready (counts as str)."""
    from pycocotools import mask as mask_utils

    encoded = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(v) for v in encoded["size"]], "counts": encoded["counts"].decode("ascii")}


def png_base64(mask: np.ndarray) -> str:
    return base64.b64encode(mask_png(mask)).decode("ascii")


def split_expressions(values: list[str]) -> list[str]:
    """Repeated fields and/or one expression per line, in order."""
    return [line for value in values for line in value.splitlines()]


def build_api(service: Service):
    """A FastAPI app with the three routes above."""
    from fastapi import FastAPI, Request
    from fastapi.responses import JSONResponse

    app = FastAPI(title="lavt", description="Referring segmentation with LAVT", docs_url="/api/docs",
                  openapi_url="/api/openapi.json", redoc_url=None)

    def error(status: int, message: str, **headers: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok", "queue": service.gate.stats()}

    @app.get("/model")
    def model() -> dict[str, Any]:
        return service.model_info()

    @app.post("/predict")
    async def predict(request: Request):
        limit = service.limits.max_upload_bytes + MULTIPART_SLACK
        length = request.headers.get("content-length")
        if length is None:
            return error(411, "send the upload with a Content-Length header")
        if not length.isdigit() or int(length) > limit:
            return error(413, f"request too large; this server accepts files of at most {service.limits.max_upload_mb:g} MB")
        try:
            form = await request.form(max_files=1, max_fields=2 * service.limits.max_expressions + 4)
        except Exception as e:  # malformed multipart: starlette raises its own types
            return error(400, f"could not read the form: {' '.join(str(e).split()) or type(e).__name__}")
        upload = form.get("image")
        if upload is None or isinstance(upload, str):
            return error(400, "no image: send the file as the multipart field 'image'")
        texts = split_expressions([v for v in form.getlist("expressions") if isinstance(v, str)])
        want_png = str(form.get("png", "false")).lower() in ("1", "true", "yes")
        suffix = Path(upload.filename or "upload").suffix[:10]
        with tempfile.TemporaryDirectory(prefix="lavt-serve-") as tmp:
            path = Path(tmp) / f"upload{suffix}"
            with open(path, "wb") as f:  # copied in chunks: the upload never sits in memory whole
                while chunk := await upload.read(1 << 20):
                    f.write(chunk)
            await upload.close()
            try:
                from starlette.concurrency import run_in_threadpool

                result = await run_in_threadpool(service.predict_image, os.fspath(path), texts, upload.filename or "image")
            except InputError as e:
                return error(400, str(e))
            except ServerBusy as e:
                return error(503, str(e), **{"Retry-After": "5"})
        height, width = result.masks.shape[1:]
        items = []
        for text, mask, area, score in zip(result.expressions, result.masks, result.areas, result.scores):
            item = {"expression": text, "mask": rle(mask), "area": area, "score": round(score, 4)}
            if want_png:
                item["png"] = png_base64(mask)
            items.append(item)
        return {"width": int(width), "height": int(height), "results": items, "warnings": result.warnings,
                "meta": result.meta}

    return app


__all__ = ["build_api", "rle", "png_base64", "split_expressions"]

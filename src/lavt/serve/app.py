"""``lavt serve``: the HTTP API and the web page in one ASGI app, served by uvicorn.

The API routes (:mod:`lavt.serve.api`) are registered first, the Gradio page is mounted at ``/``
behind them; both use the same :class:`~lavt.serve.service.Service` (one Predictor, one gate).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from .service import Service

# A user's server does not report usage to Gradio's analytics (set before gradio is imported).
os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")


def require_app_extra() -> None:
    """One line naming the install command when the optional web stack is missing."""
    missing = []
    for module in ("gradio", "fastapi", "uvicorn", "multipart", "pycocotools"):
        try:
            __import__(module)
        except ImportError:
            missing.append("python-multipart" if module == "multipart" else module)
    if missing:
        raise ConfigError(f"lavt serve needs {', '.join(missing)}: pip install 'lavt[app]'")


def create_app(service: Service, work: Path | None = None) -> Any:
    """The FastAPI app: /health, /model, /predict, /api/docs, and the page at /."""
    import gradio as gr

    from .api import build_api
    from .ui import build_ui

    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix="lavt-serve-"))
    work.mkdir(parents=True, exist_ok=True)
    app = build_api(service)
    ui = build_ui(service, work)
    return gr.mount_gradio_app(app, ui, path="/", allowed_paths=[str(work)], show_error=True,
                               max_file_size=service.limits.max_upload_bytes, footer_links=["api"])


def serve(service: Service, host: str = "127.0.0.1", port: int = 7860, work: Path | None = None,
          log_level: str = "warning") -> None:
    """Run until interrupted (Ctrl-C)."""
    import uvicorn

    app = create_app(service, work)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=5)


__all__ = ["create_app", "serve", "require_app_extra"]

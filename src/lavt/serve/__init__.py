"""Serving a loaded model to people and programs: ``lavt serve``.

* :mod:`.limits` — what one request may ask for, and the gate (one inference at a time, a bounded queue);
* :mod:`.service` — the Predictor, the limits and the gate behind both faces;
* :mod:`.api` — the HTTP API (FastAPI): ``/health``, ``/model``, ``POST /predict`` (COCO RLE masks);
* :mod:`.ui` — the web page (Gradio);
* :mod:`.app` — both in one app, run by uvicorn.

Needs the optional ``app`` extra (``pip install 'lavt[app]'``); nothing here is imported by the
rest of lavt.
"""

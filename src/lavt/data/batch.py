"""Batching dataset items: referring images and referring clips have their own collate rules;
one entry point picks the right one, for the trainer's and the evaluators' data loaders."""

from __future__ import annotations

from typing import Any


def collate(batch: list[dict[str, Any]]) -> dict[str, Any]:
    if "video" in batch[0]:
        from .ytvos import collate_video

        return collate_video(batch)
    from .refer import collate_refer

    return collate_refer(batch)

"""Weights from elsewhere: official LAVT checkpoints (:mod:`.official`), Swin / Video Swin
classification checkpoints (:mod:`.swin`), an image LAVT inflated into a video LAVT
(:mod:`.inflate`), image + video LAVTs combined into a unified LAVT (:mod:`.unified`)."""

from .inflate import inflate_image_lavt
from .official import infer_config, load_official_checkpoint, read_checkpoint
from .swin import init_backbone_from_swin, init_backbone_from_video_swin
from .unified import init_unified, init_unified_2d_from_swin

__all__ = [
    "infer_config",
    "inflate_image_lavt",
    "init_backbone_from_swin",
    "init_backbone_from_video_swin",
    "init_unified",
    "init_unified_2d_from_swin",
    "load_official_checkpoint",
    "read_checkpoint",
]

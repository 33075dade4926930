"""Scoring: referring-segmentation metrics for images (:mod:`.metrics`) and videos
(:mod:`.video_metrics`), and the benchmark protocols that run a model over a dataset (:mod:`.protocols`)."""

"""Joint image + video training data (unified LAVT, paper Sec. 3.2.3).

:class:`JointDataset` puts a referring-image dataset (items with ``image``) and a referring-video
dataset (items with ``video``) behind one index space: ``[0, n_image)`` are images,
``[n_image, n_image + n_video)`` videos. :func:`joint_batches` plans one epoch as a list of
*homogeneous* batches -- all images or all clips -- so nothing is padded and no compute is spent
on fake frames; image batches make up ``image_ratio`` of the batches. The plan is a pure
function of (seed, epoch), which keeps resumed runs exact and DDP ranks in step.
"""

from __future__ import annotations

import math
from typing import Any, Iterator

import numpy as np
from torch.utils.data import Dataset, Sampler

from ..errors import ConfigError


class JointDataset(Dataset):
    def __init__(self, image_dataset: Dataset, video_dataset: Dataset) -> None:
        self.image = image_dataset
        self.video = video_dataset
        self.n_image = len(image_dataset)  # type: ignore[arg-type]
        self.n_video = len(video_dataset)  # type: ignore[arg-type]

    def __len__(self) -> int:
        return self.n_image + self.n_video

    def set_epoch(self, epoch: int) -> None:
        for d in (self.image, self.video):
            if hasattr(d, "set_epoch"):
                d.set_epoch(epoch)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < self.n_image:
            return self.image[index]
        return self.video[index - self.n_image]


def joint_batches(n_image: int, n_video: int, batch_size: int, image_ratio: float, seed: int, epoch: int) -> list[list[int]]:
    """One epoch: every video sample once (full batches) plus as many image batches as make
    ``image_ratio`` of all batches (images drawn without replacement, reshuffled when exhausted),
    interleaved evenly in a seeded order. ``image_ratio`` 0 = videos only, 1 = one pass over the
    images only."""
    if not 0.0 <= image_ratio <= 1.0:
        raise ConfigError(f"data.image_ratio={image_ratio} must be between 0 and 1")
    rng = np.random.default_rng([seed, epoch, 7919])
    video_order = rng.permutation(n_video) + n_image
    video_batches = [video_order[i : i + batch_size].tolist() for i in range(0, n_video - batch_size + 1, batch_size)]
    if image_ratio >= 1.0:
        n_image_batches = n_image // batch_size
        video_batches = []
    else:
        n_image_batches = round(len(video_batches) * image_ratio / (1.0 - image_ratio))
    image_batches = []
    pool: list[int] = []
    for _ in range(n_image_batches):
        if len(pool) < batch_size:
            if n_image < batch_size:
                raise ConfigError(f"{n_image} training images: fewer than one batch of {batch_size}")
            pool += rng.permutation(n_image).tolist()
        image_batches.append(pool[:batch_size])
        pool = pool[batch_size:]
    # interleave: batch k of the epoch is an image batch when the running image share is behind
    batches, i, v = [], 0, 0
    total = len(image_batches) + len(video_batches)
    for k in range(total):
        want_images = math.floor((k + 1) * len(image_batches) / total) > i if total else False
        if (want_images and i < len(image_batches)) or v >= len(video_batches):
            batches.append(image_batches[i])
            i += 1
        else:
            batches.append(video_batches[v])
            v += 1
    return batches


class JointBatchSampler(Sampler[list[int]]):
    """This rank's batches of the epoch (every ``world_size``-th planned batch), minus the first
    ``skip`` of them (resume inside an epoch)."""

    def __init__(self, dataset: JointDataset, batch_size: int, image_ratio: float, seed: int, epoch: int,
                 rank: int = 0, world_size: int = 1, skip: int = 0) -> None:
        plan = joint_batches(dataset.n_image, dataset.n_video, batch_size, image_ratio, seed, epoch)
        per_rank = len(plan) // world_size
        self.batches = plan[rank : per_rank * world_size : world_size][skip:]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def batches_per_epoch(dataset: JointDataset, batch_size: int, image_ratio: float, world_size: int) -> int:
    """Batches each rank sees in one epoch (the plan's length does not depend on the seed)."""
    return len(joint_batches(dataset.n_image, dataset.n_video, batch_size, image_ratio, 0, 0)) // world_size

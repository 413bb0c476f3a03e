"""Random training patches: a crop aligned to the scale and one of the 8 dihedral augmentations.

Every sample is a pure function of ``(seed, index)``, so a run resumes exactly and a cache of
full-image teacher outputs can reproduce any sample with :func:`crop` and :func:`apply_aug`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from kdcore.data.sources import ImagePair
from kdcore.data.store import PairStore, to_float
from kdcore.errors import DataError
from kdcore.interfaces import Task

NUM_AUGMENTATIONS = 8

#: the smallest data.patch_size a spec accepts (DataSpec.patch_size)
MIN_PATCH_SIZE = 16


def crop(t: torch.Tensor, y: int, x: int, h: int, w: int) -> torch.Tensor:
    """The ``h``×``w`` window at row ``y``, column ``x`` of the last two dimensions (a view)."""
    if y < 0 or x < 0 or y + h > t.shape[-2] or x + w > t.shape[-1]:
        raise ValueError(f"crop {h}×{w} at ({y}, {x}) does not fit in {t.shape[-2]}×{t.shape[-1]}")
    return t[..., y : y + h, x : x + w]


def apply_aug(t: torch.Tensor, aug: int) -> torch.Tensor:
    """One of the 8 symmetries of the square, on the last two dimensions (H, W).

    Bit 0 flips left-right, bit 1 flips up-down, bit 2 then transposes H and W. ``aug = 0`` is
    the identity.
    """
    if not 0 <= aug < NUM_AUGMENTATIONS:
        raise ValueError(f"aug must be in 0..7, got {aug}")
    if aug & 1:
        t = torch.flip(t, dims=(-1,))
    if aug & 2:
        t = torch.flip(t, dims=(-2,))
    if aug & 4:
        t = t.transpose(-2, -1)
    return t


def apply_aug_array(a: np.ndarray, aug: int) -> np.ndarray:
    """:func:`apply_aug` on an array's last two dimensions (a view; numpy does no threading, which
    costs more than the work on a patch)."""
    if not 0 <= aug < NUM_AUGMENTATIONS:
        raise ValueError(f"aug must be in 0..7, got {aug}")
    if aug & 1:
        a = a[..., ::-1]
    if aug & 2:
        a = a[..., ::-1, :]
    if aug & 4:
        a = np.swapaxes(a, -2, -1)
    return a


class PatchLocation(NamedTuple):
    """Where sample ``index`` comes from: image, crop position (input pixels), augmentation."""

    image: int
    y: int
    x: int
    aug: int


class PatchDataset(Dataset):
    """``length`` random patches of ``pairs``; sample ``i`` depends only on ``(seed, i)``.

    ``patch_size`` is the side of the target (high-resolution) patch; the input patch is
    ``patch_size // scale``. Images are drawn uniformly, crops are aligned to the scale.
    """

    def __init__(
        self,
        pairs: Sequence[ImagePair] | PairStore,
        task: Task,
        patch_size: int,
        length: int,
        seed: int,
        augment: bool = True,
        where: str = "data.train",
    ) -> None:
        if not pairs:
            raise DataError(f"{where}: no images to draw patches from")
        scale = task.scale
        if patch_size < 1 or patch_size % scale:
            raise DataError(f"data.patch_size: {patch_size} must be a positive multiple of the scale {scale}")
        if length < 0:
            raise ValueError(f"length must not be negative, got {length}")
        self.pairs = PairStore.from_pairs(pairs)
        self.task = task
        self.patch_size = patch_size
        self.input_patch = patch_size // scale
        self.length = length
        self.seed = int(seed)
        self.augment = augment
        for index, name in enumerate(self.pairs.names):
            height, width = self.pairs.input_size(index)
            if height < self.input_patch or width < self.input_patch:
                largest = min(height, width) * scale
                fix = (
                    f"a smaller data.patch_size (at most {largest}) or " if largest >= MIN_PATCH_SIZE else ""
                )
                raise DataError(
                    f"{where}: image {name!r} (input {width}×{height}) is smaller than the "
                    f"input patch {self.input_patch}×{self.input_patch} (data.patch_size "
                    f"{patch_size} at scale {scale}); use {fix}larger images (the smallest "
                    f"data.patch_size is {MIN_PATCH_SIZE})"
                )
            target = self.pairs.target_size(index)
            if target is not None and target != (height * scale, width * scale):
                raise DataError(
                    f"{where}: image {name!r}: target {target} is not {scale}× the input {(height, width)}"
                )

    def __len__(self) -> int:
        return self.length

    def _index(self, i: int) -> int:
        index = int(i)
        if index < 0:
            index += self.length
        if not 0 <= index < self.length:
            raise IndexError(f"sample {i} out of range for {self.length} samples")
        return index

    def locate(self, i: int) -> PatchLocation:
        """The image, crop and augmentation of sample ``i``, without touching pixels."""
        index = self._index(i)
        rng = np.random.default_rng([self.seed % 2**63, index])
        image = int(rng.integers(len(self.pairs)))
        height, width = self.pairs.input_size(image)
        y = int(rng.integers(height - self.input_patch + 1))
        x = int(rng.integers(width - self.input_patch + 1))
        aug = int(rng.integers(NUM_AUGMENTATIONS))
        return PatchLocation(image, y, x, aug if self.augment else 0)

    def __getitem__(self, i: int) -> dict:
        """``{"input", "target" (when the pair has one), "index", "image", "crop", "aug"}``."""
        index = self._index(i)
        where = self.locate(index)
        pairs = self.pairs
        side, scale = self.input_patch, self.task.scale
        sample: dict = {
            # to_float copies: never hand out a view of (and so pickle) the whole image
            "input": to_float(
                apply_aug_array(pairs.input_crop(where.image, where.y, where.x, side, side), where.aug)
            ),
            "index": index,
            "image": where.image,
            "crop": torch.tensor([where.y, where.x]),
            "aug": where.aug,
        }
        if pairs.has_target(where.image):
            target = pairs.target_crop(
                where.image, where.y * scale, where.x * scale, self.patch_size, self.patch_size
            )
            sample["target"] = to_float(apply_aug_array(target, where.aug))
        return sample

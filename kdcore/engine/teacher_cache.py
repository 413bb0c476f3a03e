"""TeacherCache: the teacher's output computed once per training image, cropped like each patch.

Instead of a teacher forward pass on every patch, the teacher runs once on each whole training
image; a patch's target is the same crop and the same flip/rotation of that full output
(:func:`kdcore.data.crop`, :func:`kdcore.data.apply_aug`), so the cache stays correct under
augmentation. Entries are keyed by the image's content and by the teacher (names, params and
weights): a changed checkpoint never reuses stale outputs. On disk, a patch's target is read
straight from the stored output (a memory-mapped slice), so a warm cache costs a small read per
patch and memory does not grow with the number of training images.

For a teacher that is translation-equivariant (a convolutional network away from the borders, a
pointwise operator) the cached target equals the live one. For a model with a global path, such as
HDRNet, the cached target is the teacher's view of the whole image, not of the patch alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from kdcore.data import ImagePair, apply_aug, crop
from kdcore.data.store import PairStore, content_key
from kdcore.files import atomic_write


def default_cache_dir() -> Path:
    return Path(os.environ.get("KDCORE_CACHE", Path.home() / ".cache" / "kdcore")) / "teacher-outputs"


def teacher_key(teachers: list[torch.nn.Module], description: object) -> str:
    """A digest of the teachers' weights and buffers plus a JSON-able description (names, params, task)."""
    h = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for teacher in teachers:
        for name, tensor in sorted(teacher.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def image_key(image: torch.Tensor) -> str:
    """A digest of an image's shape and values."""
    return content_key(image)


class TeacherCache:
    """Full-image teacher outputs, in memory (as computed) or on disk (half-precision safetensors).

    ``misses`` counts the images the teacher ran on, ``hits`` the patches served from the cache.
    """

    def __init__(
        self,
        mode: str,
        teacher_image: Callable[[torch.Tensor], torch.Tensor],
        pairs: Sequence[ImagePair] | PairStore,
        scale: int,
        teacher_id: str,
        folder: Path | None = None,
    ):
        if mode not in ("memory", "disk"):
            raise ValueError(f"teacher cache mode must be 'memory' or 'disk', not {mode!r}")
        self.mode = mode
        self.teacher_image = teacher_image
        self.pairs = PairStore.from_pairs(pairs)
        self.scale = scale
        self.teacher_id = teacher_id
        self.folder = (folder or default_cache_dir()) / teacher_id
        self._memory: dict[int, torch.Tensor] = {}
        self._on_disk: set[int] = set()
        self.hits = 0
        self.misses = 0

    def _path(self, index: int) -> Path:
        return self.folder / f"{self.pairs.key(index)}.safetensors"

    def _compute(self, index: int) -> torch.Tensor:
        self.misses += 1
        return self.teacher_image(self.pairs[index].input.unsqueeze(0))[0].float().cpu()

    def full(self, index: int) -> torch.Tensor:
        """The teacher's output (3×H×W) for training image ``index``."""
        if self.mode == "disk":
            self.hits += not self._ensure_on_disk(index)
            with safe_open(str(self._path(index)), "pt") as stored:
                return stored.get_tensor("image").float()
        if index in self._memory:
            self.hits += 1
            return self._memory[index]
        out = self._compute(index)
        self._memory[index] = out
        return out

    def _ensure_on_disk(self, index: int) -> bool:
        """Computes and writes image ``index``'s output unless a run (this or an earlier one) did;
        whether it was computed now."""
        computed = False
        if index not in self._on_disk:
            path = self._path(index)
            if not path.exists():
                half = {"image": self._compute(index).half().contiguous()}
                atomic_write(path, lambda tmp: save_file(half, tmp))
                computed = True
            self._on_disk.add(index)
        return computed

    def crop(self, index: int, y: int, x: int, h: int, w: int) -> torch.Tensor:
        """The ``h``×``w`` window of image ``index``'s output at (``y``, ``x``), output pixels."""
        if self.mode == "memory":
            return crop(self.full(index), y, x, h, w)
        self.hits += not self._ensure_on_disk(index)
        with safe_open(str(self._path(index)), "pt") as stored:
            window = stored.get_slice("image")[:, y : y + h, x : x + w]
        if tuple(window.shape[-2:]) != (h, w):
            raise ValueError(
                f"crop {h}×{w} at ({y}, {x}) does not fit in the teacher output of image {index}"
            )
        return window.float()

    def stats(self) -> dict[str, int]:
        """Hits, misses, images held and their size in bytes (on disk for 'disk', in memory else)."""
        if self.mode == "disk":
            files = {self._path(i) for i in self._on_disk}
            size = sum(f.stat().st_size for f in files if f.exists())
            entries = len(self._on_disk)
        else:
            size = sum(t.numel() * t.element_size() for t in self._memory.values())
            entries = len(self._memory)
        return {"hits": self.hits, "misses": self.misses, "entries": entries, "bytes": size}

    def batch(
        self, images: torch.Tensor, crops: torch.Tensor, augs: torch.Tensor, patch_size: int
    ) -> torch.Tensor:
        """Targets for a batch, given each sample's image index, crop (input pixels) and augmentation."""
        s = self.scale
        out = [
            apply_aug(self.crop(int(i), int(c[0]) * s, int(c[1]) * s, patch_size, patch_size), int(a))
            for i, c, a in zip(images, crops, augs, strict=True)
        ]
        return torch.stack(out)

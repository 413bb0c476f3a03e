"""TeacherCache: the teacher's output computed once per training image, cropped like each patch.

Instead of a teacher forward pass on every patch, the teacher runs once on each whole training
image; a patch's target is the same crop and the same flip/rotation of that full output
(:func:`kdcore.data.crop`, :func:`kdcore.data.apply_aug`), so the cache stays correct under
augmentation. Entries are keyed by the image's content and by the teacher (names, params and
weights): a changed checkpoint never reuses stale outputs.

For a teacher that is translation-equivariant (a convolutional network away from the borders, a
pointwise operator) the cached target equals the live one. For a model with a global path, such as
HDRNet, the cached target is the teacher's view of the whole image, not of the patch alone.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from kdcore.data import ImagePair, apply_aug, crop
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
    h = hashlib.sha256(str(tuple(image.shape)).encode())
    h.update(image.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


class TeacherCache:
    """Full-image teacher outputs, in memory (as computed) or on disk (half-precision safetensors)."""

    def __init__(
        self,
        mode: str,
        teacher_image: Callable[[torch.Tensor], torch.Tensor],
        pairs: list[ImagePair],
        scale: int,
        teacher_id: str,
        folder: Path | None = None,
    ):
        if mode not in ("memory", "disk"):
            raise ValueError(f"teacher cache mode must be 'memory' or 'disk', not {mode!r}")
        self.mode = mode
        self.teacher_image = teacher_image
        self.pairs = pairs
        self.scale = scale
        self.teacher_id = teacher_id
        self.folder = (folder or default_cache_dir()) / teacher_id
        self._memory: dict[int, torch.Tensor] = {}
        self._keys = [image_key(p.input) for p in pairs]
        self.hits = 0
        self.misses = 0

    def full(self, index: int) -> torch.Tensor:
        """The teacher's output (3×H×W) for training image ``index``."""
        if index in self._memory:
            self.hits += 1
            return self._memory[index]
        path = self.folder / f"{self._keys[index]}.safetensors"
        if self.mode == "disk" and path.exists():
            self.hits += 1
            out = load_file(str(path))["image"].float()
        else:
            self.misses += 1
            out = self.teacher_image(self.pairs[index].input.unsqueeze(0))[0].float().cpu()
            if self.mode == "disk":
                half = {"image": out.half().contiguous()}
                atomic_write(path, lambda tmp: save_file(half, tmp))
                out = half["image"].float()
        self._memory[index] = out
        return out

    def stats(self) -> dict[str, int]:
        """Hits, misses, images held and their size in bytes (on disk for 'disk', in memory else)."""
        if self.mode == "disk":
            files = {self.folder / f"{k}.safetensors" for k in self._keys}
            size = sum(f.stat().st_size for f in files if f.exists())
        else:
            size = sum(t.numel() * t.element_size() for t in self._memory.values())
        return {"hits": self.hits, "misses": self.misses, "entries": len(self._memory), "bytes": size}

    def batch(
        self, images: torch.Tensor, crops: torch.Tensor, augs: torch.Tensor, patch_size: int
    ) -> torch.Tensor:
        """Targets for a batch, given each sample's image index, crop (input pixels) and augmentation."""
        s = self.scale
        out = [
            apply_aug(crop(self.full(int(i)), int(c[0]) * s, int(c[1]) * s, patch_size, patch_size), int(a))
            for i, c, a in zip(images, crops, augs, strict=True)
        ]
        return torch.stack(out)

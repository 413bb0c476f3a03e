"""Training images held for patch cutting: in memory, or decoded once into uint8 files on disk.

A run at DIV2K scale (800 images of about 2040×1400) would need about 27 GB as float32 tensors.
:class:`PairStore` keeps each training pair either in memory (8-bit images as uint8, 4× smaller
than float32) or, for large sets, decoded and degraded once into uncompressed ``.npy`` files under
``$KDCORE_CACHE/pixels``, from which each patch is read through a short-lived memory map: the
process holds file names, shapes and the patches of the current batch, whatever the set's size.
Disk entries are keyed by the file's path, size and modification time, the degradation and the
task, so a changed image or setting never reuses stale pixels, and a second run starts at once.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch

from kdcore.data.sources import ImagePair, ImageRecord
from kdcore.files import atomic_write

#: data.cache "auto": training pixels beyond this many bytes (as uint8) are held on disk
MEMORY_LIMIT_BYTES = 256 * 2**20

CACHE_MODES = ("auto", "memory", "disk")


def default_pixel_dir() -> Path:
    """Where ``data.cache: "disk"`` keeps decoded training images (``$KDCORE_CACHE/pixels``)."""
    return Path(os.environ.get("KDCORE_CACHE", Path.home() / ".cache" / "kdcore")) / "pixels"


def _as_uint8(image: torch.Tensor) -> np.ndarray | None:
    """The image as a C×H×W uint8 array when that is exact (8-bit data), else None."""
    levels = torch.round(image * 255.0)
    if not torch.equal(levels / 255.0, image):
        return None
    return np.ascontiguousarray(levels.to(torch.uint8).numpy())


def to_float(array: np.ndarray) -> torch.Tensor:
    """A uint8 or float32 C×H×W array as a new contiguous float32 tensor in [0, 1].

    Numpy, not torch, does the arithmetic: on small patches torch's intra-op threads cost more
    than the work (milliseconds a call on a busy machine).
    """
    if array.dtype == np.uint8:
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32) / np.float32(255.0))
    return torch.from_numpy(np.array(array, dtype=np.float32, order="C"))


def content_key(image: torch.Tensor | np.ndarray) -> str:
    """A digest of an image's shape and values (what the teacher cache keys outputs by)."""
    array = image.detach().cpu().contiguous().numpy() if isinstance(image, torch.Tensor) else image
    h = hashlib.sha256(str(tuple(array.shape)).encode())
    h.update(np.ascontiguousarray(array).tobytes())
    return h.hexdigest()[:32]


class _Held:
    """One image of a pair: a tensor, a uint8 array, or a uint8/float32 ``.npy`` file."""

    def __init__(self, value: torch.Tensor | np.ndarray | Path, shape: tuple[int, ...]):
        self.value = value
        self.shape = shape

    def crop(self, y: int, x: int, h: int, w: int) -> np.ndarray:
        """The ``h``×``w`` window at row ``y``, column ``x``, as a uint8 or float32 array (a view of
        an array held in memory, a copy of what a file holds)."""
        if y < 0 or x < 0 or y + h > self.shape[-2] or x + w > self.shape[-1]:
            raise ValueError(f"crop {h}×{w} at ({y}, {x}) does not fit in {self.shape[-2]}×{self.shape[-1]}")
        value = self.value
        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()[..., y : y + h, x : x + w]
        if isinstance(value, Path):
            mapped = np.load(value, mmap_mode="r")  # mapped for this read only: nothing stays resident
            try:
                return np.array(mapped[:, y : y + h, x : x + w])
            finally:
                del mapped
        return value[:, y : y + h, x : x + w]

    def whole(self) -> torch.Tensor:
        value = self.value
        if isinstance(value, torch.Tensor):
            return value
        if isinstance(value, Path):
            return to_float(np.load(value))
        return to_float(value)


class PairStore(Sequence[ImagePair]):
    """The training pairs of a run, cut into patches without holding more than they need.

    Indexing gives the whole :class:`ImagePair` (decoded from disk for disk entries); patch cutting
    uses :meth:`input_crop` / :meth:`target_crop`, and the teacher cache :meth:`key`.
    """

    def __init__(
        self,
        names: list[str],
        inputs: list[_Held],
        targets: list[_Held | None],
        keys: list[str | None],
        mode: str,
    ):
        self.names, self._inputs, self._targets, self._keys = names, inputs, targets, keys
        self.mode = mode

    # -- building ---------------------------------------------------------------------------
    @classmethod
    def from_pairs(cls, pairs: Sequence[ImagePair]) -> PairStore:
        """Pairs already in memory, kept as they are (no copy)."""
        if isinstance(pairs, PairStore):
            return pairs
        return cls(
            [p.name for p in pairs],
            [_Held(p.input, tuple(p.input.shape)) for p in pairs],
            [None if p.target is None else _Held(p.target, tuple(p.target.shape)) for p in pairs],
            [None] * len(pairs),
            "memory",
        )

    @classmethod
    def build(
        cls,
        records: Sequence[ImageRecord],
        mode: str = "auto",
        *,
        folder: Path | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> PairStore:
        """Decodes ``records`` once: into memory (uint8 where exact) or into ``.npy`` files on disk.

        ``mode`` ``"auto"`` chooses disk when the pixels would take more than
        :data:`MEMORY_LIMIT_BYTES`. Disk entries already written by an earlier run are reused.
        """
        if mode not in CACHE_MODES:
            raise ValueError(f"mode must be one of {', '.join(CACHE_MODES)}, got {mode!r}")
        if mode == "auto":
            mode = "disk" if estimated_bytes(records) > MEMORY_LIMIT_BYTES else "memory"
        folder = folder or default_pixel_dir()
        names: list[str] = []
        inputs: list[_Held] = []
        targets: list[_Held | None] = []
        keys: list[str | None] = []
        for i, record in enumerate(records):
            held = _store_disk(record, folder) if mode == "disk" else _store_memory(record)
            names.append(record.name)
            inputs.append(held[0])
            targets.append(held[1])
            keys.append(held[2])
            if progress is not None:
                progress(i + 1, len(records))
        return cls(names, inputs, targets, keys, mode)

    # -- access -----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.names)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        target = self._targets[index]
        return ImagePair(
            self.names[index], self._inputs[index].whole(), None if target is None else target.whole()
        )

    def input_size(self, index: int) -> tuple[int, int]:
        """(height, width) of input ``index``, without reading pixels."""
        shape = self._inputs[index].shape
        return int(shape[-2]), int(shape[-1])

    def target_size(self, index: int) -> tuple[int, int] | None:
        target = self._targets[index]
        return None if target is None else (int(target.shape[-2]), int(target.shape[-1]))

    def has_target(self, index: int) -> bool:
        return self._targets[index] is not None

    def input_crop(self, index: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """A window of input ``index`` as stored (uint8 or float32; :func:`to_float` converts)."""
        return self._inputs[index].crop(y, x, h, w)

    def target_crop(self, index: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        target = self._targets[index]
        if target is None:
            raise ValueError(f"image {self.names[index]!r} has no target")
        return target.crop(y, x, h, w)

    def key(self, index: int) -> str:
        """A digest of input ``index``'s pixels (stored with disk entries, so no re-reading)."""
        known = self._keys[index]
        if known is None:
            known = content_key(self._inputs[index].whole())
            self._keys[index] = known
        return known


def estimated_bytes(records: Sequence[ImageRecord]) -> int:
    """The records' pixels as uint8 (unknown sizes count as small)."""
    return sum(3 * (r.pixels or 0) for r in records)


def _store_memory(record: ImageRecord) -> tuple[_Held, _Held | None, str | None]:
    pair = record.load()
    held: list[_Held | None] = []
    for image in (pair.input, pair.target):
        if image is None:
            held.append(None)
            continue
        array = _as_uint8(image)
        held.append(_Held(image if array is None else array, tuple(image.shape)))
    first = held[0]
    assert first is not None  # every pair has an input
    return first, held[1], None


def _store_disk(record: ImageRecord, folder: Path) -> tuple[_Held, _Held | None, str]:
    digest = hashlib.sha256(record.stamp.encode()).hexdigest()[:40]
    base = folder / digest[:2] / digest
    manifest = base.with_suffix(".json")
    if manifest.exists():
        try:
            found = _held_from(base, json.loads(manifest.read_text()))
            if found is not None:
                return found
        except (OSError, ValueError, KeyError):
            pass  # unreadable or partial: written again below
    pair = record.load()
    meta: dict = {"name": record.name, "stamp": record.stamp}
    for part, image in (("input", pair.input), ("target", pair.target)):
        if image is None:
            meta[part] = None
            continue
        array = _as_uint8(image)
        if array is None:
            array = np.ascontiguousarray(image.numpy(), dtype=np.float32)
        path = Path(f"{base}-{part}.npy")
        atomic_write(path, functools.partial(_save_npy, array=array))
        meta[part] = list(array.shape)
    meta["key"] = content_key(pair.input)
    text = json.dumps(meta)
    atomic_write(manifest, lambda tmp: Path(tmp).write_text(text))
    found = _held_from(base, meta)
    assert found is not None  # just written
    return found


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as fh:  # a file object: np.save would append ".npy" to a name
        np.save(fh, array)


def _held_from(base: Path, meta: dict) -> tuple[_Held, _Held | None, str] | None:
    """The entry a manifest describes, or None when one of its files is missing."""
    held: list[_Held | None] = []
    for part in ("input", "target"):
        if meta[part] is None:
            held.append(None)
            continue
        path = Path(f"{base}-{part}.npy")
        if not path.exists():
            return None
        held.append(_Held(path, tuple(meta[part])))
    first = held[0]
    if first is None:
        return None
    return first, held[1], meta["key"]

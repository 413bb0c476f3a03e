"""Data sources as (input, target) image pairs: built-in photos, image folders, paired folders."""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple, Union

import torch

from kdcore.data.builtin import BUILTIN_PREFIX, load_builtin
from kdcore.data.images import IMAGE_EXTENSIONS, crop_to_multiple, downscale, load_image
from kdcore.errors import DataError
from kdcore.interfaces import Task

Source = Union[str, os.PathLike, dict]
"""``"builtin:NAME"``, a folder of images, or ``{"input": FOLDER, "target": FOLDER}``."""

_MAX_LISTED = 5


class ImagePair(NamedTuple):
    """One example: ``input`` 3×h×w and ``target`` 3×(h·s)×(w·s), or no target."""

    name: str
    input: torch.Tensor
    target: torch.Tensor | None


def list_image_files(folder: Path, *, where: str) -> list[Path]:
    """The image files of ``folder``, sorted by name; hidden files and other extensions skipped.

    A missing folder, a path that is not a folder, or a folder without images is a DataError.
    """
    folder = Path(folder)
    if not folder.exists():
        raise DataError(f"{where}: folder {folder} does not exist")
    if not folder.is_dir():
        raise DataError(f"{where}: {folder} is not a folder (give a folder of images)")
    try:
        entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
    except OSError as error:
        raise DataError(f"{where}: cannot list folder {folder}: {error.strerror or error}") from None
    files = [entry for entry in entries if not entry.name.startswith(".") and entry.is_file()]
    images = [entry for entry in files if entry.suffix.lower() in IMAGE_EXTENSIONS]
    if not images:
        accepted = ", ".join(IMAGE_EXTENSIONS)
        if files:
            raise DataError(
                f"{where}: folder {folder} has {len(files)} file(s) but no images; "
                f"accepted extensions: {accepted}"
            )
        raise DataError(f"{where}: folder {folder} is empty (expected image files: {accepted})")
    return images


def _load(path: Path, where: str) -> torch.Tensor:
    try:
        return load_image(path)
    except DataError as error:
        raise DataError(f"{where}: {error}") from None


def _size(image: torch.Tensor) -> str:
    return f"{image.shape[-1]}×{image.shape[-2]}"


def _make_pair(name: str, image: torch.Tensor, task: Task, origin: str, where: str) -> ImagePair:
    """An unpaired image: an SR pair by bicubic downscaling, or an input without a target."""
    if task.kind == "enhance":
        return ImagePair(name, image, None)
    target = crop_to_multiple(image, task.scale)
    if target.shape[-2] == 0 or target.shape[-1] == 0:
        raise DataError(
            f"{where}: image {origin} ({_size(image)}) is smaller than the scale {task.scale}"
        )
    target = target.contiguous()
    return ImagePair(name, downscale(target, task.scale), target)


def _by_stem(files: list[Path], folder: Path, where: str) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in files:
        if path.stem in found:
            raise DataError(
                f"{where}: folder {folder} has two images named {path.stem!r} "
                f"({found[path.stem].name}, {path.name}); pairs are matched by name, keep one"
            )
        found[path.stem] = path
    return found


def _listed(names: list[str]) -> str:
    shown = ", ".join(names[:_MAX_LISTED])
    return shown + (f", ... ({len(names)} in all)" if len(names) > _MAX_LISTED else "")


def _load_paired(folders: dict, task: Task, where: str) -> list[ImagePair]:
    if set(folders) != {"input", "target"}:
        raise DataError(
            f"{where}: a paired source needs exactly the keys 'input' and 'target' "
            f"(got {sorted(map(str, folders))})"
        )
    input_dir, target_dir = Path(folders["input"]), Path(folders["target"])
    inputs = _by_stem(list_image_files(input_dir, where=f"{where}.input"), input_dir, where)
    targets = _by_stem(list_image_files(target_dir, where=f"{where}.target"), target_dir, where)
    only_input = sorted(set(inputs) - set(targets))
    only_target = sorted(set(targets) - set(inputs))
    if only_input or only_target:
        problems = []
        if only_input:
            problems.append(f"no target in {target_dir} for: {_listed(only_input)}")
        if only_target:
            problems.append(f"no input in {input_dir} for: {_listed(only_target)}")
        raise DataError(f"{where}: unmatched images ({'; '.join(problems)}); pairs are matched by file name")
    pairs = []
    for stem in sorted(inputs):
        low = _load(inputs[stem], where)
        high = _load(targets[stem], where)
        expected = (low.shape[-2] * task.scale, low.shape[-1] * task.scale)
        if tuple(high.shape[-2:]) != expected:
            relation = (
                f"{task.scale}× the input size" if task.kind == "sr" else "the same size as the input"
            )
            raise DataError(
                f"{where}: target {targets[stem]} is {_size(high)} but input {inputs[stem]} is "
                f"{_size(low)}; the target must be {relation} "
                f"({expected[1]}×{expected[0]})"
            )
        pairs.append(ImagePair(stem, low, high))
    return pairs


def load_pairs(source: Source, task: Task, *, where: str) -> list[ImagePair]:
    """Loads a data source as image pairs, in a deterministic order.

    ``where`` is the spec location (e.g. ``"data.train"``) that error messages name. For "sr",
    built-in photos and plain folders are high-resolution images: the target is the image
    cropped to a multiple of the scale and the input its bicubic downscaling. For "enhance" they
    are inputs without a target. Paired folders are taken as they are, matched by file stem.
    """
    if isinstance(source, dict):
        return _load_paired(source, task, where)
    if isinstance(source, str) and source.startswith(BUILTIN_PREFIX):
        return [
            _make_pair(name, image, task, f"{source}/{name}", where)
            for name, image in load_builtin(source, where=where)
        ]
    if isinstance(source, (str, os.PathLike)):
        folder = Path(source)
        return [
            _make_pair(path.stem, _load(path, where), task, str(path), where)
            for path in list_image_files(folder, where=where)
        ]
    raise DataError(
        f"{where}: expected 'builtin:NAME', a folder, or {{\"input\": FOLDER, \"target\": FOLDER}}, "
        f"got {type(source).__name__}"
    )

"""Data sources as (input, target) image pairs: built-in photos, image folders, paired folders."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from kdcore.data.builtin import BUILTIN_DATASETS, BUILTIN_PREFIX, load_builtin
from kdcore.data.images import IMAGE_EXTENSIONS, crop_to_multiple, downscale, load_image
from kdcore.errors import DataError
from kdcore.interfaces import Task

if TYPE_CHECKING:
    from kdcore.spec import PairedFolders

Source = str | os.PathLike | dict
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
        raise DataError(f"{where}: image {origin} ({_size(image)}) is smaller than the scale {task.scale}")
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


class DataSource:
    """Where images come from; ``load(task)`` turns them into :class:`ImagePair` rows.

    Sources are small frozen values (they compare equal when they name the same data) built from
    the spec by :func:`source_from_spec`. ``where`` is the spec location error messages name.
    """

    where: str

    def load(self, task: Task) -> list[ImagePair]:  # pragma: no cover - abstract
        raise NotImplementedError

    def check(self) -> None:
        """Cheap checks that need no decoding (folders exist and hold images); raises DataError."""

    def has_targets(self, task: Task) -> bool:
        """Whether ``load`` gives ground-truth targets for ``task``."""
        return task.kind == "sr"

    def to_spec(self) -> str | dict:
        """The spec spelling of this source (what ``spec.json`` stores)."""
        raise NotImplementedError  # pragma: no cover


@dataclass(frozen=True)
class BuiltinSource(DataSource):
    """``builtin:NAME``: photographs that ship inside scikit-image (nothing is downloaded)."""

    name: str
    where: str = field(default="data", compare=False)

    def check(self) -> None:
        if self.name not in BUILTIN_DATASETS:
            valid = ", ".join(BUILTIN_PREFIX + n for n in BUILTIN_DATASETS)
            raise DataError(
                f"{self.where}: unknown built-in data {BUILTIN_PREFIX + self.name!r}; valid: {valid}"
            )

    def load(self, task: Task) -> list[ImagePair]:
        spelled = BUILTIN_PREFIX + self.name
        return [
            _make_pair(name, image, task, f"{spelled}/{name}", self.where)
            for name, image in load_builtin(spelled, where=self.where)
        ]

    def to_spec(self) -> str:
        return BUILTIN_PREFIX + self.name


@dataclass(frozen=True)
class FolderSource(DataSource):
    """A folder of images: high-resolution images for ``sr``, inputs without targets for ``enhance``."""

    path: Path
    where: str = field(default="data", compare=False)

    def check(self) -> None:
        list_image_files(self.path, where=self.where)

    def load(self, task: Task) -> list[ImagePair]:
        """One pair per image, named by its stem (by its file name when two images share a stem)."""
        files = list_image_files(self.path, where=self.where)
        stems = [path.stem for path in files]
        return [
            _make_pair(
                path.stem if stems.count(path.stem) == 1 else path.name,
                _load(path, self.where),
                task,
                str(path),
                self.where,
            )
            for path in files
        ]

    def to_spec(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class PairedSource(DataSource):
    """Two folders, inputs and targets, matched by file stem (``{"input": ..., "target": ...}``)."""

    input: Path
    target: Path
    where: str = field(default="data", compare=False)

    def _matched(self) -> tuple[dict[str, Path], dict[str, Path]]:
        inputs = _by_stem(list_image_files(self.input, where=f"{self.where}.input"), self.input, self.where)
        targets = _by_stem(
            list_image_files(self.target, where=f"{self.where}.target"), self.target, self.where
        )
        only_input = sorted(set(inputs) - set(targets))
        only_target = sorted(set(targets) - set(inputs))
        if only_input or only_target:
            problems = []
            if only_input:
                problems.append(f"no target in {self.target} for: {_listed(only_input)}")
            if only_target:
                problems.append(f"no input in {self.input} for: {_listed(only_target)}")
            raise DataError(
                f"{self.where}: unmatched images ({'; '.join(problems)}); pairs are matched by file name"
            )
        return inputs, targets

    def check(self) -> None:
        self._matched()

    def has_targets(self, task: Task) -> bool:
        return True

    def load(self, task: Task) -> list[ImagePair]:
        inputs, targets = self._matched()
        pairs = []
        for stem in sorted(inputs):
            low = _load(inputs[stem], self.where)
            high = _load(targets[stem], self.where)
            expected = (low.shape[-2] * task.scale, low.shape[-1] * task.scale)
            if tuple(high.shape[-2:]) != expected:
                relation = (
                    f"{task.scale}× the input size" if task.kind == "sr" else "the same size as the input"
                )
                raise DataError(
                    f"{self.where}: target {targets[stem]} is {_size(high)} but input {inputs[stem]} is "
                    f"{_size(low)}; the target must be {relation} ({expected[1]}×{expected[0]})"
                )
            pairs.append(ImagePair(stem, low, high))
        return pairs

    def to_spec(self) -> dict:
        return {"input": str(self.input), "target": str(self.target)}


@dataclass(frozen=True)
class UnlabeledSource(DataSource):
    """Images without ground truth, used at their own resolution as inputs (``data.unlabeled``).

    For ``sr`` their crops are extra low-resolution inputs ("zoom-in" data upcycling); the
    teacher's output is their target.
    """

    images: BuiltinSource | FolderSource
    where: str = field(default="data.unlabeled", compare=False)

    def check(self) -> None:
        self.images.check()

    def has_targets(self, task: Task) -> bool:
        return False

    def load(self, task: Task) -> list[ImagePair]:
        return [p._replace(target=None) for p in self.images.load(Task(kind="enhance"))]

    def to_spec(self) -> str:
        return self.images.to_spec()


def source_from_spec(
    value: Source | DataSource | PairedFolders, *, where: str, base: Path | None = None
) -> DataSource:
    """The source a spec value names: ``builtin:NAME``, a folder, or ``{"input", "target"}`` folders.

    Relative folders are resolved against ``base`` (the folder of the spec file).
    """

    def folder(p: str | os.PathLike) -> Path:
        path = Path(p).expanduser()
        return (base / path).resolve() if base is not None else path.resolve()

    if isinstance(value, DataSource):
        return value
    if hasattr(value, "input") and hasattr(value, "target") and not isinstance(value, (str, os.PathLike)):
        value = {"input": value.input, "target": value.target}  # the spec's pydantic model
    if isinstance(value, dict):
        if set(value) != {"input", "target"}:
            raise DataError(
                f"{where}: a paired source needs exactly the keys 'input' and 'target' "
                f"(got {sorted(map(str, value))})"
            )
        return PairedSource(folder(value["input"]), folder(value["target"]), where=where)
    if isinstance(value, str) and value.startswith(BUILTIN_PREFIX):
        return BuiltinSource(value[len(BUILTIN_PREFIX) :], where=where)
    if isinstance(value, (str, os.PathLike)):
        return FolderSource(folder(value), where=where)
    raise DataError(
        f'{where}: expected \'builtin:NAME\', a folder, or {{"input": FOLDER, "target": FOLDER}}, '
        f"got {type(value).__name__}"
    )


def load_pairs(source: Source | DataSource, task: Task, *, where: str) -> list[ImagePair]:
    """Loads a data source as image pairs, in a deterministic order.

    ``where`` is the spec location (e.g. ``"data.train"``) that error messages name. For "sr",
    built-in photos and plain folders are high-resolution images: the target is the image
    cropped to a multiple of the scale and the input its bicubic downscaling. For "enhance" they
    are inputs without a target. Paired folders are taken as they are, matched by file stem.
    """
    return source_from_spec(source, where=where).load(task)

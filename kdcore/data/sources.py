"""Data sources as (input, target) image pairs: built-in photos, image folders, paired folders."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from PIL import Image

from kdcore.data.builtin import BUILTIN_DATASETS, BUILTIN_PREFIX, TEST_SETS, load_photo, test_set_files
from kdcore.data.images import (
    DEFAULT_DEGRADATION,
    IMAGE_EXTENSIONS,
    crop_to_multiple,
    downscale,
    load_image,
)
from kdcore.errors import DataError
from kdcore.interfaces import Task

if TYPE_CHECKING:
    from kdcore.spec import PairedFolders

Source = str | os.PathLike | dict
"""``"builtin:NAME"``, a folder of images, or ``{"input": FOLDER, "target": FOLDER}``."""

_MAX_LISTED = 5

#: the input-stem templates of DIV2K / BasicSR layouts tried when stems differ (0001x2 <-> 0001)
_SCALE_TEMPLATES = tuple(
    template.format(scale=k)
    for k in range(2, 9)
    for template in ("{{}}x{scale}", "{{}}_x{scale}", "{{}}X{scale}")
)


class ImagePair(NamedTuple):
    """One example: ``input`` 3×h×w and ``target`` 3×(h·s)×(w·s), or no target."""

    name: str
    input: torch.Tensor
    target: torch.Tensor | None


@dataclass(frozen=True)
class ImageRecord:
    """One image pair before decoding: its name, what identifies its content, how to load it.

    ``stamp`` names the content without decoding it (file path, size and modification time, plus
    what the pair depends on: degradation, task); ``pixels`` counts the pixels of the pair's input
    and target together (None when unknown and small), for the memory estimate of ``data.cache``.
    """

    name: str
    stamp: str
    load: Callable[[], ImagePair]
    pixels: int | None = None


def _file_stamp(path: Path) -> str:
    try:
        stat = path.stat()
    except OSError:
        return str(path)  # load() names the problem
    return f"{path}|{stat.st_size}|{stat.st_mtime_ns}"


def _header_pixels(path: Path) -> int | None:
    """Width × height from the file's header (no decoding), or None where it cannot be read."""
    try:
        with Image.open(path) as image:
            width, height = image.size
    except Exception:  # noqa: BLE001 - decoding errors are reported by load(), with the file named
        return None
    return width * height


def _pair_pixels(pixels: int | None, task: Task) -> int | None:
    """Pixels of an unpaired image's pair: the image, plus its downscaled input for sr."""
    if pixels is None:
        return None
    return pixels + (pixels // (task.scale * task.scale) if task.kind == "sr" else 0)


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


def _make_pair(
    name: str, image: torch.Tensor, task: Task, origin: str, where: str, degradation: str
) -> ImagePair:
    """An unpaired image: an SR pair by bicubic downscaling (``degradation``), or an input without a target."""
    if task.kind == "enhance":
        return ImagePair(name, image, None)
    target = crop_to_multiple(image, task.scale)
    if target.shape[-2] == 0 or target.shape[-1] == 0:
        raise DataError(f"{where}: image {origin} ({_size(image)}) is smaller than the scale {task.scale}")
    target = target.contiguous()
    return ImagePair(name, downscale(target, task.scale, degradation), target)


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

    def records(self, task: Task) -> list[ImageRecord]:  # pragma: no cover - abstract
        """The source's pairs, listed but not decoded (what training data stores load lazily)."""
        raise NotImplementedError

    def load(self, task: Task) -> list[ImagePair]:
        """Every pair, decoded, in a deterministic order."""
        return [record.load() for record in self.records(task)]

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
    degradation: str = DEFAULT_DEGRADATION

    def check(self) -> None:
        if self.name not in BUILTIN_DATASETS and self.name not in TEST_SETS:
            valid = ", ".join(BUILTIN_PREFIX + n for n in (*BUILTIN_DATASETS, *TEST_SETS))
            raise DataError(
                f"{self.where}: unknown built-in data {BUILTIN_PREFIX + self.name!r}; valid: {valid}"
            )

    def records(self, task: Task) -> list[ImageRecord]:
        self.check()
        spelled = BUILTIN_PREFIX + self.name
        setting = f"{self.degradation}|{task.kind}x{task.scale}"

        def record(name: str, read: Callable[[], torch.Tensor]) -> ImageRecord:
            def load() -> ImagePair:
                return _make_pair(name, read(), task, f"{spelled}/{name}", self.where, self.degradation)

            return ImageRecord(name, f"{spelled}/{name}|{setting}", load)

        if self.name in TEST_SETS:
            return [
                record(path.stem, functools.partial(_load, path, self.where))
                for path in test_set_files(self.name)
            ]
        return [record(name, functools.partial(load_photo, name)) for name in BUILTIN_DATASETS[self.name]]

    def to_spec(self) -> str:
        return BUILTIN_PREFIX + self.name


@dataclass(frozen=True)
class FolderSource(DataSource):
    """A folder of images: high-resolution images for ``sr``, inputs without targets for ``enhance``."""

    path: Path
    where: str = field(default="data", compare=False)
    degradation: str = DEFAULT_DEGRADATION

    def check(self) -> None:
        list_image_files(self.path, where=self.where)

    def records(self, task: Task) -> list[ImageRecord]:
        """One pair per image, named by its stem (by its file name when two images share a stem)."""
        files = list_image_files(self.path, where=self.where)
        stems = [path.stem for path in files]
        setting = f"{self.degradation}|{task.kind}x{task.scale}"

        def record(path: Path) -> ImageRecord:
            name = path.stem if stems.count(path.stem) == 1 else path.name

            def load() -> ImagePair:
                return _make_pair(
                    name, _load(path, self.where), task, str(path), self.where, self.degradation
                )

            return ImageRecord(
                name, f"{_file_stamp(path)}|{setting}", load, _pair_pixels(_header_pixels(path), task)
            )

        return [record(path) for path in files]

    def to_spec(self) -> str:
        return str(self.path)


@dataclass(frozen=True)
class PairedSource(DataSource):
    """Two folders, inputs and targets, matched by file stem (``{"input": ..., "target": ...}``)."""

    input: Path
    target: Path
    where: str = field(default="data", compare=False)
    input_name: str | None = None  # target stem -> input stem template, e.g. "{}x2"

    def _template(self, inputs: dict[str, Path], targets: dict[str, Path]) -> str:
        """The stem template pairing the folders: ``input_name``, equal stems, or the one template
        among the scale-carrying names (``{}x2``, ``{}_x4``, ...) that pairs every file."""
        if self.input_name is not None or set(inputs) == set(targets):
            return self.input_name or "{}"
        fits = [
            template for template in _SCALE_TEMPLATES if {template.format(t) for t in targets} == set(inputs)
        ]
        return fits[0] if len(fits) == 1 else "{}"

    def _matched(self) -> tuple[dict[str, Path], dict[str, Path]]:
        """Input and target files by target stem; a file on one side only is a DataError."""
        inputs = _by_stem(list_image_files(self.input, where=f"{self.where}.input"), self.input, self.where)
        targets = _by_stem(
            list_image_files(self.target, where=f"{self.where}.target"), self.target, self.where
        )
        template = self._template(inputs, targets)
        expected = {template.format(stem): stem for stem in targets}
        only_input = sorted(set(inputs) - set(expected))
        only_target = sorted(stem for name, stem in expected.items() if name not in inputs)
        if only_input or only_target:
            problems = []
            if only_input:
                problems.append(f"no target in {self.target} for: {_listed(only_input)}")
            if only_target:
                problems.append(f"no input in {self.input} for: {_listed(only_target)}")
            rule = (
                f"input stems are the target stems through input_name {self.input_name!r}"
                if self.input_name is not None
                else "pairs are matched by file name (or by names carrying the scale, such as 0001x2 for "
                "0001; 'input_name': '{}x2' states the rule)"
            )
            raise DataError(f"{self.where}: unmatched images ({'; '.join(problems)}); {rule}")
        return {stem: inputs[name] for name, stem in expected.items()}, targets

    def check(self) -> None:
        self._matched()

    def has_targets(self, task: Task) -> bool:
        return True

    def records(self, task: Task) -> list[ImageRecord]:
        inputs, targets = self._matched()

        def record(stem: str) -> ImageRecord:
            low_path, high_path = inputs[stem], targets[stem]

            def load() -> ImagePair:
                low = _load(low_path, self.where)
                high = _load(high_path, self.where)
                expected = (low.shape[-2] * task.scale, low.shape[-1] * task.scale)
                if tuple(high.shape[-2:]) != expected:
                    relation = (
                        f"{task.scale}× the input size" if task.kind == "sr" else "the same size as the input"
                    )
                    raise DataError(
                        f"{self.where}: target {high_path} is {_size(high)} but input {low_path} is "
                        f"{_size(low)}; the target must be {relation} ({expected[1]}×{expected[0]})"
                    )
                return ImagePair(stem, low, high)

            sizes = [_header_pixels(low_path), _header_pixels(high_path)]
            return ImageRecord(
                stem,
                f"{_file_stamp(low_path)}|{_file_stamp(high_path)}|{task.kind}x{task.scale}",
                load,
                None if None in sizes else sum(s for s in sizes if s is not None),
            )

        return [record(stem) for stem in sorted(inputs)]

    def to_spec(self) -> dict:
        spelled = {"input": str(self.input), "target": str(self.target)}
        return spelled if self.input_name is None else {**spelled, "input_name": self.input_name}


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

    def records(self, task: Task) -> list[ImageRecord]:
        return self.images.records(Task(kind="enhance"))

    def to_spec(self) -> str:
        return self.images.to_spec()


def source_from_spec(
    value: Source | DataSource | PairedFolders,
    *,
    where: str,
    base: Path | None = None,
    degradation: str = DEFAULT_DEGRADATION,
) -> DataSource:
    """The source a spec value names: ``builtin:NAME``, a folder, or ``{"input", "target"}`` folders.

    Relative folders are resolved against ``base`` (the folder of the spec file); ``degradation``
    makes the sr inputs of unpaired images (``data.degradation``).
    """

    def folder(p: str | os.PathLike) -> Path:
        path = Path(p).expanduser()
        return (base / path).resolve() if base is not None else path.resolve()

    if isinstance(value, DataSource):
        return value
    if hasattr(value, "model_dump"):  # the spec's pydantic model
        value = {k: v for k, v in value.model_dump().items() if v is not None}
    if isinstance(value, dict):
        if not {"input", "target"} <= set(value) <= {"input", "target", "input_name"}:
            raise DataError(
                f"{where}: a paired source needs the keys 'input' and 'target' (and optionally "
                f"'input_name'), got {sorted(map(str, value))}"
            )
        return PairedSource(
            folder(value["input"]), folder(value["target"]), where=where, input_name=value.get("input_name")
        )
    if isinstance(value, str) and value.startswith(BUILTIN_PREFIX):
        return BuiltinSource(value[len(BUILTIN_PREFIX) :], where=where, degradation=degradation)
    if isinstance(value, (str, os.PathLike)):
        return FolderSource(folder(value), where=where, degradation=degradation)
    raise DataError(
        f'{where}: expected \'builtin:NAME\', a folder, or {{"input": FOLDER, "target": FOLDER}}, '
        f"got {type(value).__name__}"
    )


def load_pairs(
    source: Source | DataSource, task: Task, *, where: str, degradation: str = DEFAULT_DEGRADATION
) -> list[ImagePair]:
    """Loads a data source as image pairs, in a deterministic order.

    ``where`` is the spec location (e.g. ``"data.train"``) that error messages name. For "sr",
    built-in photos and plain folders are high-resolution images: the target is the image
    cropped to a multiple of the scale and the input its bicubic downscaling (``degradation``). For
    "enhance" they are inputs without a target. Paired folders are taken as they are, matched by
    file stem (or by scale-carrying names such as ``0001x2`` for ``0001``).
    """
    return source_from_spec(source, where=where, degradation=degradation).load(task)

"""The built-in datasets: photographs shipped inside scikit-image's wheel, and the SR test sets.

``builtin:photos`` / ``builtin:photos-val`` are read straight from scikit-image's data folder
(never downloaded). The training and validation splits are fixed and disjoint; the two
motorcycle views show one scene and so stay in one split. ``builtin:set5`` / ``builtin:set14``
are the standard super-resolution test sets, shipped inside kdcore (``kdcore/data/sets``).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path

import numpy as np
import torch

from kdcore.data.images import load_image
from kdcore.errors import DataError

BUILTIN_PREFIX = "builtin:"

PHOTO_FILES: dict[str, str] = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "ihc": "ihc.png",
    "motorcycle_left": "motorcycle_left.png",
    "motorcycle_right": "motorcycle_right.png",
    "retina": "retina.jpg",
    "rocket": "rocket.jpg",
}
"""Photo name -> file name in scikit-image's data folder (real colour photographs only)."""

BUILTIN_DATASETS: dict[str, tuple[str, ...]] = {
    "photos": (
        "astronaut",
        "hubble_deep_field",
        "ihc",
        "motorcycle_left",
        "motorcycle_right",
        "retina",
        "rocket",
    ),
    "photos-val": ("chelsea", "coffee"),
}
"""Dataset name (as in ``builtin:NAME``) -> photo names, in a fixed order."""


TEST_SETS: dict[str, str] = {"set5": "Set5", "set14": "Set14"}
"""``builtin:NAME`` -> folder under ``kdcore/data/sets``: the standard SR test sets (see its README)."""

SETS_FOLDER = Path(__file__).parent / "sets"


def builtin_names() -> dict[str, list[str]]:
    """The built-in photo datasets (without the ``builtin:`` prefix) and the photos in each
    (names :func:`load_photo` takes); the test sets are :func:`test_set_names`."""
    return {name: list(photos) for name, photos in BUILTIN_DATASETS.items()}


def test_set_names() -> dict[str, list[str]]:
    """The built-in SR test sets (``set5``, ``set14``) and the image names in each."""
    return {name: [path.stem for path in test_set_files(name)] for name in TEST_SETS}


def test_set_files(name: str) -> list[Path]:
    """The image files of the built-in test set ``name`` (``set5``, ``set14``), sorted."""
    folder = SETS_FOLDER / TEST_SETS[name]
    files = sorted(folder.glob("*.png"))
    if not files:
        raise DataError(f"built-in data 'builtin:{name}' is missing ({folder}); reinstall kdcore")
    return files


def photo_folder() -> Path:
    """The folder of scikit-image's bundled sample images."""
    spec = importlib.util.find_spec("skimage")
    if spec is None or not spec.submodule_search_locations:
        raise DataError("the built-in photos need scikit-image; install it (pip install scikit-image)")
    return Path(next(iter(spec.submodule_search_locations))) / "data"


@functools.cache
def _photo_pixels(name: str) -> np.ndarray:
    """The decoded photo as an 8-bit H×W×3 array (cached; read-only)."""
    path = photo_folder() / PHOTO_FILES[name]
    if not path.is_file():
        raise DataError(
            f"built-in photo {name!r} is missing ({path}); reinstall scikit-image (its wheel ships this file)"
        )
    pixels = torch.round(load_image(path) * 255.0).to(torch.uint8).permute(1, 2, 0).numpy()
    pixels = np.ascontiguousarray(pixels)
    pixels.setflags(write=False)
    return pixels


def load_photo(name: str) -> torch.Tensor:
    """One built-in photo as a fresh float32 tensor 3×H×W in [0, 1]."""
    if name not in PHOTO_FILES:
        raise DataError(f"unknown built-in photo {name!r}; known: {', '.join(sorted(PHOTO_FILES))}")
    pixels = torch.tensor(_photo_pixels(name))
    return pixels.permute(2, 0, 1).to(torch.float32).div_(255.0).contiguous()


def load_builtin(source: str, *, where: str) -> list[tuple[str, torch.Tensor]]:
    """The (name, image) list of ``builtin:NAME``; an unknown name lists the valid ones."""
    dataset = source[len(BUILTIN_PREFIX) :] if source.startswith(BUILTIN_PREFIX) else source
    if dataset in TEST_SETS:
        return [(path.stem, load_image(path)) for path in test_set_files(dataset)]
    if dataset not in BUILTIN_DATASETS:
        valid = ", ".join(BUILTIN_PREFIX + name for name in (*BUILTIN_DATASETS, *TEST_SETS))
        raise DataError(f"{where}: unknown built-in dataset {source!r}; valid names: {valid}")
    return [(name, load_photo(name)) for name in BUILTIN_DATASETS[dataset]]

"""Fixtures for the kdcore-spandrel tests: small image folders and a tiny spec."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def spandrel_images(tmp_path_factory) -> dict[str, Path]:
    """Small crops of scikit-image's sample photos: train (2 images) and val (1 image)."""
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("spandrel-images")
    crops = {"train": {"astronaut": skimage.data.astronaut()[100:164, 180:244],
                       "rocket": skimage.data.rocket()[200:264, 250:314]},
             "val": {"coffee": skimage.data.coffee()[100:148, 200:248]}}
    for split, images in crops.items():
        (root / split).mkdir()
        for name, array in images.items():
            Image.fromarray(array).save(root / split / f"{name}.png")
    return {"train": root / "train", "val": root / "val"}


@pytest.fixture
def spandrel_spec(tmp_path, spandrel_images) -> dict:
    """An sr ×2 spec distilling a checkpoint (``teacher.checkpoint`` to be filled) into a tiny compact."""
    return {
        "task": {"kind": "sr", "scale": 2},
        "data": {"train": str(spandrel_images["train"]), "val": str(spandrel_images["val"]),
                 "patch_size": 16, "batch_size": 2},
        "teacher": {"name": "spandrel", "checkpoint": str(tmp_path / "teacher.pth")},
        "student": {"name": "compact", "params": {"num_feat": 8, "num_conv": 2}},
        "losses": [{"name": "l1"}],
        "train": {"steps": 3, "lr": 0.001, "log_every": 1},
        "output": str(tmp_path / "run"),
    }

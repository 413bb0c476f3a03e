import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FIXTURE_SITE = Path(__file__).parent / "fixtures" / "site"

# The core's tests use a tiny student from a fake installed distribution (real entry point, no pip).
sys.path.insert(0, str(FIXTURE_SITE))
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(FIXTURE_SITE), os.environ.get("PYTHONPATH")]))
os.environ.pop("KDCORE_LOAD_PLUGINS", None)
os.environ.pop("KDCORE_DISABLE_PLUGINS", None)
os.environ.pop("KDCORE_STRICT_PLUGINS", None)


@pytest.fixture(autouse=True)
def _fresh_plugins():
    from kdcore.plugins import reset_plugins

    reset_plugins()
    yield
    reset_plugins()


@pytest.fixture(scope="session")
def tiny_images(tmp_path_factory) -> dict[str, Path]:
    """Small crops of the built-in photos: a train folder (3 images) and a val folder (2 images)."""
    import skimage.data
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    crops = {
        "train": {"astronaut": skimage.data.astronaut()[100:196, 180:276], "rocket": skimage.data.rocket()[200:296, 250:346],
                  "ihc": skimage.data.immunohistochemistry()[:96, :96]},
        "val": {"coffee": skimage.data.coffee()[100:164, 200:264], "chelsea": skimage.data.chelsea()[60:124, 150:214]},
    }
    for split, images in crops.items():
        (root / split).mkdir()
        for name, array in images.items():
            Image.fromarray(array).save(root / split / f"{name}.png")
    return {"train": root / "train", "val": root / "val"}


@pytest.fixture
def tiny_spec(tmp_path, tiny_images) -> dict:
    """A complete sr ×2 spec that trains the tiny test student for 3 steps on small images."""
    return {
        "task": {"kind": "sr", "scale": 2},
        "data": {"train": str(tiny_images["train"]), "val": str(tiny_images["val"]), "patch_size": 32, "batch_size": 2},
        "student": {"name": "tiny-sr", "params": {"channels": 4}},
        "losses": [{"name": "l1"}],
        "train": {"steps": 3, "lr": 0.001, "log_every": 1},
        "output": str(tmp_path / "run"),
    }

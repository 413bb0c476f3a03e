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


@pytest.fixture
def tiny_spec(tmp_path) -> dict:
    """A complete sr ×2 spec that trains the tiny test student for 3 steps."""
    return {
        "task": {"kind": "sr", "scale": 2},
        "data": {"train": "builtin:photos", "val": "builtin:photos-val", "patch_size": 32, "batch_size": 2},
        "student": {"name": "tiny-sr", "params": {"channels": 4}},
        "losses": [{"name": "l1"}],
        "train": {"steps": 3, "lr": 0.001, "log_every": 1},
        "output": str(tmp_path / "run"),
    }

import subprocess
import sys

import torch

import kdcore
from kdcore.engine.tiling import run_tiled


def test_tiled_equals_untiled_for_a_local_model():
    model = kdcore.create("student", "tiny-sr", {"channels": 4}).eval()
    torch.nn.init.normal_(model.tail.weight, std=0.1)
    x = torch.rand(1, 3, 70, 53, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        full = model(x)
    tiled = run_tiled(model, x, scale=2, tile=24, overlap=8)
    assert tiled.shape == full.shape
    assert torch.allclose(tiled, full, atol=1e-5)


def test_enhance_tiles_huge_images(tiny_spec, tmp_path):
    kdcore.run(tiny_spec)
    from PIL import Image

    Image.new("RGB", (300, 200), (120, 60, 30)).save(tmp_path / "big.png")
    out = subprocess.run([sys.executable, "-m", "kdcore", "enhance", tiny_spec["output"], str(tmp_path / "big.png"),
                          "-o", str(tmp_path / "out"), "--max-pixels", "10000"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert Image.open(tmp_path / "out" / "big.png").size == (600, 400)

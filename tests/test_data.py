"""Tests of kdcore.data: image I/O, SR resampling, sources, built-in photos, patches."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from kdcore.data import (
    IMAGE_EXTENSIONS,
    ImagePair,
    PatchDataset,
    apply_aug,
    builtin_names,
    crop,
    crop_to_multiple,
    downscale,
    load_image,
    load_pairs,
    load_photo,
    save_image,
    upscale_bicubic,
)
from kdcore.errors import DataError, KdcoreError
from kdcore.interfaces import Task

SR2 = Task(kind="sr", scale=2)
SR3 = Task(kind="sr", scale=3)
ENHANCE = Task(kind="enhance", scale=1)


def rgb_array(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A reproducible H×W×3 uint8 image with structure (not only noise)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx * 255 // max(width - 1, 1), yy * 255 // max(height - 1, 1), (xx + yy) % 256], -1)
    noise = rng.integers(-20, 21, size=(height, width, 3))
    return np.clip(base + noise, 0, 255).astype(np.uint8)


def write_rgb(path, height: int, width: int, seed: int = 0) -> np.ndarray:
    array = rgb_array(height, width, seed)
    Image.fromarray(array).save(path)
    return array


def as_hwc(tensor: torch.Tensor) -> np.ndarray:
    return tensor.permute(1, 2, 0).numpy()


# --------------------------------------------------------------------------- load_image


def test_rgb_png_loads_exactly(tmp_path):
    array = write_rgb(tmp_path / "a.png", 7, 9)
    image = load_image(tmp_path / "a.png")
    assert image.dtype == torch.float32 and image.shape == (3, 7, 9)
    np.testing.assert_allclose(as_hwc(image), array / 255.0, atol=1e-7)


def test_grey_image_is_replicated_to_rgb(tmp_path):
    grey = rgb_array(6, 5)[:, :, 0]
    Image.fromarray(grey, mode="L").save(tmp_path / "g.png")
    image = load_image(str(tmp_path / "g.png"))
    assert image.shape == (3, 6, 5)
    for channel in range(3):
        np.testing.assert_allclose(image[channel].numpy(), grey / 255.0, atol=1e-7)


def test_alpha_is_dropped(tmp_path):
    rgba = np.concatenate([rgb_array(5, 6), np.full((5, 6, 1), 7, np.uint8)], axis=2)
    Image.fromarray(rgba, mode="RGBA").save(tmp_path / "a.png")
    np.testing.assert_allclose(as_hwc(load_image(tmp_path / "a.png")), rgba[:, :, :3] / 255.0, atol=1e-7)
    grey_alpha = Image.fromarray(rgba[:, :, :1].squeeze(-1), mode="L").convert("LA")
    grey_alpha.save(tmp_path / "la.png")
    image = load_image(tmp_path / "la.png")
    np.testing.assert_allclose(image[1].numpy(), rgba[:, :, 0] / 255.0, atol=1e-7)


def test_palette_image_is_expanded(tmp_path):
    rgb = Image.fromarray(rgb_array(8, 8))
    palette = rgb.quantize(colors=16)
    palette.save(tmp_path / "p.png")
    with Image.open(tmp_path / "p.png") as reopened:
        assert reopened.mode == "P"
    expected = np.asarray(palette.convert("RGB")) / 255.0
    np.testing.assert_allclose(as_hwc(load_image(tmp_path / "p.png")), expected, atol=1e-7)


def test_16bit_grey_png_keeps_its_precision(tmp_path):
    values = (np.arange(4 * 5).reshape(4, 5) * 3001 + 7).astype(np.uint16)
    Image.fromarray(values).save(tmp_path / "deep.png")
    image = load_image(tmp_path / "deep.png")
    np.testing.assert_allclose(image[0].numpy(), values / 65535.0, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(image[0].numpy(), image[2].numpy())
    # 7/65535 is below one 8-bit step: it would be lost by clipping to 8 bits
    assert 0 < image[0, 0, 0].item() < 1 / 255


def test_16bit_rgb_and_float_tiff(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    values = (np.random.default_rng(1).random((5, 6, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "deep.tif", values)
    np.testing.assert_allclose(as_hwc(load_image(tmp_path / "deep.tif")), values / 65535.0, atol=1e-6)
    floats = np.random.default_rng(2).random((4, 3)).astype(np.float32)
    Image.fromarray(floats, mode="F").save(tmp_path / "f.tiff")
    image = load_image(tmp_path / "f.tiff")
    assert image.shape == (3, 4, 3)
    np.testing.assert_allclose(image[1].numpy(), floats, atol=1e-7)


def test_exif_orientation_is_applied(tmp_path):
    array = rgb_array(4, 10)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise to display
    Image.fromarray(array).save(tmp_path / "o.jpg", exif=exif, quality=95)
    assert load_image(tmp_path / "o.jpg").shape == (3, 10, 4)


@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_truncated_image_is_an_error(tmp_path, suffix):
    buffer = io.BytesIO()
    Image.fromarray(rgb_array(64, 64)).save(buffer, format="PNG" if suffix == ".png" else "JPEG")
    path = tmp_path / f"cut{suffix}"
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    with pytest.raises(DataError, match="truncated") as info:
        load_image(path)
    assert str(path) in str(info.value)


def test_text_file_named_png_is_an_error(tmp_path):
    path = tmp_path / "x.png"
    path.write_text("not an image")
    with pytest.raises(DataError) as info:
        load_image(path)
    assert str(path) in str(info.value) and "cannot decode" in str(info.value)
    assert isinstance(info.value, KdcoreError)


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        load_image(tmp_path / "nothing.png")


def test_save_image_round_trips_and_leaves_no_temp_files(tmp_path):
    image = torch.rand(3, 5, 7)
    image[0, 0, 0] = 1.7  # clamped
    image[1, 0, 0] = -0.2
    path = tmp_path / "out" / "img.png"
    save_image(image, path)
    assert [p.name for p in path.parent.iterdir()] == ["img.png"]
    loaded = load_image(path)
    expected = torch.round(image.clamp(0, 1) * 255) / 255
    torch.testing.assert_close(loaded, expected, atol=1e-6, rtol=0)
    save_image(torch.zeros(3, 5, 7), path)  # replaces
    assert load_image(path).max() == 0


# --------------------------------------------------------------------------- resampling


def test_torch_bicubic_downscale_is_antialiased_bicubic_rounded_to_8_bits():
    torch.manual_seed(0)
    hr = torch.rand(3, 12, 18)
    lr = downscale(hr, 3, "torch-bicubic")
    assert lr.shape == (3, 4, 6)
    levels = lr * 255
    torch.testing.assert_close(levels, torch.round(levels), atol=1e-4, rtol=0)
    reference = F.interpolate(hr[None], size=(4, 6), mode="bicubic", antialias=True, align_corners=False)
    torch.testing.assert_close(lr, torch.round(reference[0].clamp(0, 1) * 255) / 255)
    assert downscale(hr[None].repeat(2, 1, 1, 1), 3).shape == (2, 3, 4, 6)
    with pytest.raises(ValueError):
        downscale(torch.rand(3, 13, 18), 3)


def test_upscale_bicubic_and_crop_to_multiple():
    lr = torch.rand(3, 5, 4)
    up = upscale_bicubic(lr, 3, "torch-bicubic")
    assert up.shape == (3, 15, 12) and up.min() >= 0 and up.max() <= 1
    reference = F.interpolate(lr[None], scale_factor=3, mode="bicubic", align_corners=False)[0]
    torch.testing.assert_close(up, reference.clamp(0, 1))
    img = torch.arange(3 * 7 * 10, dtype=torch.float32).reshape(3, 7, 10)
    cropped = crop_to_multiple(img, 3)
    assert cropped.shape == (3, 6, 9)
    assert torch.equal(cropped, img[:, :6, :9])


# --------------------------------------------------------------------------- built-in photos


def test_builtin_splits_are_fixed_and_disjoint():
    names = builtin_names()
    assert set(names) == {"photos", "photos-val"}
    assert not set(names["photos"]) & set(names["photos-val"])
    assert len(names["photos"]) >= 5 and len(names["photos-val"]) >= 2
    together = [split for split, photos in names.items() if {"motorcycle_left", "motorcycle_right"} & set(photos)]
    assert len(together) == 1
    assert builtin_names() == names  # a constant


def test_every_builtin_photo_is_a_colour_photograph():
    for photos in builtin_names().values():
        for name in photos:
            image = load_photo(name)
            assert image.shape[0] == 3 and min(image.shape[1:]) >= 256, name
            assert (image[0] - image[1]).abs().mean() > 0.01, f"{name} looks grey"


def test_builtin_val_sr_pairs():
    pairs = load_pairs("builtin:photos-val", SR3, where="data.val")
    assert [pair.name for pair in pairs] == builtin_names()["photos-val"]
    for pair in pairs:
        h, w = pair.input.shape[-2:]
        assert pair.target.shape == (3, h * 3, w * 3)
        assert pair.target.shape[-2] % 3 == 0 and pair.target.shape[-1] % 3 == 0
        torch.testing.assert_close(pair.input, downscale(pair.target, 3))
    again = load_pairs("builtin:photos-val", SR3, where="data.val")
    assert all(torch.equal(a.target, b.target) for a, b in zip(pairs, again))
    pairs[0].target.zero_()  # a caller's change does not leak into the cache
    assert load_pairs("builtin:photos-val", SR3, where="data.val")[0].target.max() > 0


def test_builtin_enhance_has_no_target():
    pairs = load_pairs("builtin:photos-val", ENHANCE, where="data.val")
    assert all(pair.target is None and pair.input.shape[0] == 3 for pair in pairs)


def test_unknown_builtin_lists_valid_names():
    with pytest.raises(DataError) as info:
        load_pairs("builtin:faces", SR2, where="data.train")
    message = str(info.value)
    assert "data.train" in message and "builtin:photos" in message and "builtin:photos-val" in message


# --------------------------------------------------------------------------- folders


def test_folder_sr_pairs_sorted_skipping_other_files(tmp_path):
    write_rgb(tmp_path / "b.png", 13, 11, seed=1)
    write_rgb(tmp_path / "a.PNG", 8, 10, seed=2)
    write_rgb(tmp_path / ".hidden.png", 8, 8)
    (tmp_path / "notes.txt").write_text("skip me")
    (tmp_path / "sub").mkdir()
    pairs = load_pairs(tmp_path, SR2, where="data.train")
    assert [pair.name for pair in pairs] == ["a", "b"]
    assert pairs[1].target.shape == (3, 12, 10) and pairs[1].input.shape == (3, 6, 5)
    expected = load_image(tmp_path / "b.png")[:, :12, :10]
    assert torch.equal(pairs[1].target, expected)


def test_folder_enhance_is_input_only(tmp_path):
    write_rgb(tmp_path / "a.jpg", 9, 7)
    (pair,) = load_pairs(tmp_path, ENHANCE, where="data.train")
    assert pair.input.shape == (3, 9, 7) and pair.target is None


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist") as info:
        load_pairs(tmp_path / "missing", SR2, where="data.val")
    assert "data.val" in str(info.value) and "missing" in str(info.value)
    (tmp_path / "file.png").write_bytes(b"")
    with pytest.raises(DataError, match="not a folder"):
        load_pairs(tmp_path / "file.png", SR2, where="data.val")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty") as info:
        load_pairs(empty, SR2, where="data.train")
    assert str(empty) in str(info.value) and "data.train" in str(info.value)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "readme.md").write_text("hi")
    with pytest.raises(DataError) as info:
        load_pairs(texts, SR2, where="data.train")
    assert all(ext in str(info.value) for ext in IMAGE_EXTENSIONS)


def test_broken_file_in_folder_names_it_and_the_spec_location(tmp_path):
    write_rgb(tmp_path / "a.png", 8, 8)
    (tmp_path / "b.png").write_text("oops")
    with pytest.raises(DataError) as info:
        load_pairs(tmp_path, SR2, where="data.train")
    assert "data.train" in str(info.value) and str(tmp_path / "b.png") in str(info.value)


def test_image_smaller_than_scale_is_an_error(tmp_path):
    write_rgb(tmp_path / "tiny.png", 2, 8)
    with pytest.raises(DataError, match="tiny.png"):
        load_pairs(tmp_path, SR3, where="data.train")


# --------------------------------------------------------------------------- paired folders


def make_paired(tmp_path, names, low=(5, 6), scale=2):
    inputs, targets = tmp_path / "lr", tmp_path / "hr"
    inputs.mkdir(exist_ok=True)
    targets.mkdir(exist_ok=True)
    for index, name in enumerate(names):
        write_rgb(inputs / f"{name}.png", *low, seed=index)
        write_rgb(targets / f"{name}.png", low[0] * scale, low[1] * scale, seed=index + 10)
    return {"input": inputs, "target": targets}


def test_paired_folders_load_as_is(tmp_path):
    source = make_paired(tmp_path, ["x", "y"])
    with Image.open(source["target"] / "y.png") as png:
        png.save(source["target"] / "y.bmp", format="BMP")
    (source["target"] / "y.png").unlink()
    pairs = load_pairs(source, SR2, where="data.val")
    assert [pair.name for pair in pairs] == ["x", "y"]
    assert torch.equal(pairs[0].input, load_image(source["input"] / "x.png"))
    assert torch.equal(pairs[0].target, load_image(source["target"] / "x.png"))
    assert pairs[1].target.shape == (3, 10, 12)


def test_paired_size_mismatch_names_both_files(tmp_path):
    source = make_paired(tmp_path, ["x"], scale=3)
    with pytest.raises(DataError) as info:
        load_pairs(source, SR2, where="data.train")
    message = str(info.value)
    assert "x.png" in message and str(source["input"]) in message and str(source["target"]) in message
    assert "18×15" in message and "6×5" in message
    with pytest.raises(DataError, match="same size"):
        load_pairs(source, ENHANCE, where="data.train")
    (tmp_path / "same").mkdir()
    same = make_paired(tmp_path / "same", ["z"], scale=1)
    assert load_pairs(same, ENHANCE, where="data.train")[0].target.shape == (3, 5, 6)


def test_paired_unmatched_names_are_listed(tmp_path):
    source = make_paired(tmp_path, ["a", "b"])
    for index in range(7):
        write_rgb(source["input"] / f"extra{index}.png", 5, 6)
    write_rgb(source["target"] / "lonely.png", 10, 12)
    with pytest.raises(DataError) as info:
        load_pairs(source, SR2, where="data.train")
    message = str(info.value)
    assert "extra0" in message and "extra4" in message and "extra6" not in message
    assert "7 in all" in message and "lonely" in message and "data.train" in message


# --------------------------------------------------------------------------- patches


@pytest.fixture
def sr_pairs():
    torch.manual_seed(0)
    pairs = []
    for name, (h, w) in {"p": (24, 30), "q": (16, 20)}.items():
        target = torch.rand(3, h * 2, w * 2)
        pairs.append(ImagePair(name, downscale(target, 2), target))
    return pairs


def test_patches_are_a_pure_function_of_seed_and_index(sr_pairs):
    dataset = PatchDataset(sr_pairs, SR2, patch_size=16, length=50, seed=7)
    other = PatchDataset(sr_pairs, SR2, patch_size=16, length=50, seed=7)
    assert len(dataset) == 50
    for i in (0, 13, 49):
        a, b = dataset[i], other[i]
        assert torch.equal(a["input"], b["input"]) and torch.equal(a["target"], b["target"])
        assert a["aug"] == b["aug"] and torch.equal(a["crop"], b["crop"]) and a["index"] == i
    first, second = dataset[0], dataset[1]
    assert not torch.equal(first["input"], second["input"])
    reseeded = PatchDataset(sr_pairs, SR2, patch_size=16, length=50, seed=8)
    assert not torch.equal(first["input"], reseeded[0]["input"])
    sample = dataset[5]
    assert sample["input"].shape == (3, 8, 8) and sample["target"].shape == (3, 16, 16)
    assert sample["input"].is_contiguous() and sample["input"].untyped_storage().nbytes() == 3 * 8 * 8 * 4


def test_patches_cover_images_crops_and_all_augmentations(sr_pairs):
    dataset = PatchDataset(sr_pairs, SR2, patch_size=16, length=200, seed=0)
    samples = [dataset[i] for i in range(200)]
    assert {s["aug"] for s in samples} == set(range(8))
    assert {s["image"] for s in samples} == {0, 1}
    assert len({tuple(s["crop"].tolist()) for s in samples}) > 50
    plain = PatchDataset(sr_pairs, SR2, patch_size=16, length=20, seed=0, augment=False)
    assert {plain[i]["aug"] for i in range(20)} == {0}


def test_crop_and_aug_reproduce_a_sample_from_full_images(sr_pairs):
    dataset = PatchDataset(sr_pairs, SR2, patch_size=16, length=40, seed=3)
    # what a teacher-output cache holds: a full-image output per image
    teacher = [upscale_bicubic(pair.input, 2) for pair in sr_pairs]
    for i in range(40):
        sample = dataset[i]
        pair = sr_pairs[sample["image"]]
        y, x = sample["crop"].tolist()
        assert dataset.locate(i) == (sample["image"], y, x, sample["aug"])
        assert torch.equal(apply_aug(crop(pair.input, y, x, 8, 8), sample["aug"]), sample["input"])
        assert torch.equal(apply_aug(crop(pair.target, 2 * y, 2 * x, 16, 16), sample["aug"]), sample["target"])
        # patching the full teacher output equals running the teacher on the patch up to borders
        cached = apply_aug(crop(teacher[sample["image"]], 2 * y, 2 * x, 16, 16), sample["aug"])
        direct = upscale_bicubic(sample["input"], 2)
        torch.testing.assert_close(cached[:, 4:-4, 4:-4], direct[:, 4:-4, 4:-4], atol=1e-5, rtol=0)


def test_apply_aug_is_the_dihedral_group():
    t = torch.arange(9.0).reshape(1, 3, 3)
    results = [apply_aug(t, aug) for aug in range(8)]
    assert len({tuple(r.flatten().tolist()) for r in results}) == 8
    assert torch.equal(results[0], t)
    batch = torch.rand(2, 3, 4, 4)
    assert torch.equal(apply_aug(batch, 5)[1], apply_aug(batch[1], 5))
    with pytest.raises(ValueError):
        apply_aug(t, 8)


def test_patch_dataset_batches_with_a_dataloader(sr_pairs):
    dataset = PatchDataset(sr_pairs, SR2, patch_size=16, length=6, seed=0)
    batch = next(iter(torch.utils.data.DataLoader(dataset, batch_size=3)))
    assert batch["input"].shape == (3, 3, 8, 8) and batch["target"].shape == (3, 3, 16, 16)
    assert batch["crop"].shape == (3, 2)
    with pytest.raises(IndexError):
        dataset[6]


def test_enhance_patches_without_target(tmp_path):
    write_rgb(tmp_path / "a.png", 20, 20)
    pairs = load_pairs(tmp_path, ENHANCE, where="data.train")
    sample = PatchDataset(pairs, ENHANCE, patch_size=16, length=3, seed=0)[2]
    assert "target" not in sample and sample["input"].shape == (3, 16, 16)


def test_image_smaller_than_patch_is_an_error(sr_pairs):
    with pytest.raises(DataError) as info:
        PatchDataset(sr_pairs, SR2, patch_size=40, length=5, seed=0)
    message = str(info.value)
    assert "'q'" in message and "40" in message and "data.patch_size" in message

"""Images and data sets: file I/O, SR resampling, built-in photos, folders, training patches."""

from __future__ import annotations

from kdcore.data.builtin import BUILTIN_DATASETS, builtin_names, load_photo
from kdcore.data.images import (
    IMAGE_EXTENSIONS,
    crop_to_multiple,
    downscale,
    load_image,
    quantize,
    save_image,
    to_uint8,
    upscale_bicubic,
)
from kdcore.data.patches import NUM_AUGMENTATIONS, PatchDataset, PatchLocation, apply_aug, crop
from kdcore.data.sources import (
    BuiltinSource,
    DataSource,
    FolderSource,
    ImagePair,
    PairedSource,
    UnlabeledSource,
    list_image_files,
    load_pairs,
    source_from_spec,
)

__all__ = [
    "BUILTIN_DATASETS",
    "IMAGE_EXTENSIONS",
    "NUM_AUGMENTATIONS",
    "BuiltinSource",
    "DataSource",
    "FolderSource",
    "ImagePair",
    "PairedSource",
    "PatchDataset",
    "PatchLocation",
    "UnlabeledSource",
    "apply_aug",
    "builtin_names",
    "crop",
    "crop_to_multiple",
    "downscale",
    "list_image_files",
    "load_image",
    "load_pairs",
    "load_photo",
    "quantize",
    "save_image",
    "source_from_spec",
    "to_uint8",
    "upscale_bicubic",
]

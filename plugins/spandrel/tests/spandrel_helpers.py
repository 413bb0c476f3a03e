"""Tiny params per architecture, so the tests stay fast."""

from __future__ import annotations

TINY: dict[str, dict] = {
    "edsr": {"n_resblocks": 2, "n_feats": 8},
    "rcan": {"n_resgroups": 1, "n_resblocks": 1, "n_feats": 16, "reduction": 4},
    "swinir": {"embed_dim": 12, "depths": [2], "num_heads": [2], "window_size": 4, "img_size": 16},
    "esrgan": {"num_filters": 8, "num_blocks": 1},
    "span": {"feature_channels": 8},
    "compact": {"num_feat": 8, "num_conv": 2},
    "safmn": {"dim": 8, "n_blocks": 1},
    "omnisr": {"num_feat": 8, "res_num": 1, "window_size": 4},
}

#: the spandrel architecture id each name is detected as
ARCH_IDS = {"edsr": "EDSR", "rcan": "RCAN", "swinir": "SwinIR", "esrgan": "ESRGAN", "span": "SPAN",
            "compact": "Compact", "safmn": "SAFMN", "omnisr": "OmniSR"}

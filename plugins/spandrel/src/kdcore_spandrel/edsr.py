"""EDSR (Lim et al. 2017), which spandrel does not detect: the network and its spandrel architecture.

The module uses the key layout of the original EDSR code (``head.0``, ``body.N.body.{0,2}``,
``tail.0.K``, ``tail.1``, ``sub_mean``/``add_mean``); checkpoints in BasicSR's layout
(``conv_first``, ``body.N.conv{1,2}``, ``conv_after_body``, ``upsample.K``, ``conv_last``) are
converted to it on loading. The forward takes and returns RGB in [0, 1], like every spandrel model.
"""

from __future__ import annotations

import math

import torch
from spandrel import Architecture, ImageModelDescriptor, StateDict
from spandrel.util import KeyCondition, get_seq_len, store_hyperparameters
from torch import nn

#: the DIV2K mean the original code and BasicSR subtract (RGB, in [0, 1])
DIV2K_MEAN = (0.4488, 0.4371, 0.4040)
RGB_RANGE = 255.0


class MeanShift(nn.Conv2d):
    """A fixed 1×1 convolution adding (``sign=1``) or subtracting the DIV2K mean, as in EDSR's code.

    Its weights are in the state dict (the original checkpoints carry them) but never trained.
    """

    def __init__(self, sign: int) -> None:
        super().__init__(3, 3, kernel_size=1)
        assert self.bias is not None  # Conv2d's default bias=True
        with torch.no_grad():
            self.weight.copy_(torch.eye(3).view(3, 3, 1, 1))
            self.bias.copy_(sign * RGB_RANGE * torch.tensor(DIV2K_MEAN))
        self.requires_grad_(False)


class ResBlock(nn.Module):
    """conv - ReLU - conv, scaled by ``res_scale``, plus the input."""

    def __init__(self, n_feats: int, res_scale: float) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
            nn.ReLU(True),
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.res_scale = res_scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x).mul(self.res_scale) + x


def _upsampler(scale: int, n_feats: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    if scale == 3:
        layers += [nn.Conv2d(n_feats, 9 * n_feats, 3, padding=1), nn.PixelShuffle(3)]
    elif scale in (1, 2, 4, 8):
        for _ in range(int(math.log2(scale))):
            layers += [nn.Conv2d(n_feats, 4 * n_feats, 3, padding=1), nn.PixelShuffle(2)]
    else:
        raise ValueError(f"EDSR supports scales 1, 2, 3, 4 and 8, not {scale}")
    return nn.Sequential(*layers)


@store_hyperparameters()
class EDSR(nn.Module):
    """Enhanced Deep Residual Network; EDSR-baseline is 16 blocks of 64 features, EDSR 32 of 256."""

    hyperparameters: dict = {}  # noqa: RUF012 - spandrel's convention; set per instance

    def __init__(
        self, *, scale: int = 2, n_resblocks: int = 16, n_feats: int = 64, res_scale: float = 1.0
    ) -> None:
        super().__init__()
        self.scale = scale
        self.sub_mean = MeanShift(-1)
        self.head = nn.Sequential(nn.Conv2d(3, n_feats, 3, padding=1))
        self.body = nn.Sequential(
            *[ResBlock(n_feats, res_scale) for _ in range(n_resblocks)],
            nn.Conv2d(n_feats, n_feats, 3, padding=1),
        )
        self.tail = nn.Sequential(_upsampler(scale, n_feats), nn.Conv2d(n_feats, 3, 3, padding=1))
        self.add_mean = MeanShift(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.sub_mean(x * RGB_RANGE)
        x = self.head(x)
        x = self.body(x) + x
        return self.add_mean(self.tail(x)) / RGB_RANGE


_BASICSR = KeyCondition.has_all(
    "conv_first.weight",
    "body.0.conv1.weight",
    "body.0.conv2.weight",
    "conv_after_body.weight",
    "conv_last.weight",
)
_ORIGINAL = KeyCondition.has_all(
    "head.0.weight", "body.0.body.0.weight", "body.0.body.2.weight", "tail.1.weight"
)


def basicsr_to_original(state: StateDict) -> StateDict:
    """Renames a BasicSR EDSR state dict to the original code's layout (adds the fixed mean shifts)."""
    out: StateDict = {}
    n_blocks = get_seq_len(state, "body")
    for key, value in state.items():
        head, _, rest = key.partition(".")
        if head == "conv_first":
            out[f"head.0.{rest}"] = value
        elif head == "body":
            i, _, tail = rest.partition(".")
            conv, _, kind = tail.partition(".")
            out[f"body.{i}.body.{0 if conv == 'conv1' else 2}.{kind}"] = value
        elif head == "conv_after_body":
            out[f"body.{n_blocks}.{rest}"] = value
        elif head == "upsample":
            out[f"tail.0.{rest}"] = value
        elif head == "conv_last":
            out[f"tail.1.{rest}"] = value
        # anything else (e.g. a stored mean) carries nothing the original layout needs
    for name, sign in (("sub_mean", -1), ("add_mean", 1)):
        shift = MeanShift(sign)
        assert shift.bias is not None  # MeanShift always has one
        out[f"{name}.weight"] = shift.weight.detach().clone()
        out[f"{name}.bias"] = shift.bias.detach().clone()
    return out


class EDSRArch(Architecture[EDSR]):
    """Detects EDSR and EDSR-baseline checkpoints in the original and in BasicSR's key layout."""

    def __init__(self) -> None:
        super().__init__(id="EDSR", detect=KeyCondition.has_any(_ORIGINAL, _BASICSR))

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[EDSR]:
        if _BASICSR(state_dict) and not _ORIGINAL(state_dict):
            state_dict = basicsr_to_original(state_dict)
        n_resblocks = get_seq_len(state_dict, "body") - 1
        n_feats = state_dict["head.0.weight"].shape[0]
        if "tail.0.2.weight" in state_dict:
            scale = 2 ** ((get_seq_len(state_dict, "tail.0") + 1) // 2)  # conv, shuffle per ×2
        elif "tail.0.0.weight" in state_dict:
            scale = {4: 2, 9: 3}[state_dict["tail.0.0.weight"].shape[0] // n_feats]
        else:
            scale = 1
        # res_scale leaves no trace in the weights: the published convention is 0.1 for the
        # 256-feature EDSR and 1 for EDSR-baseline
        res_scale = 0.1 if n_feats >= 256 else 1.0
        model = EDSR(scale=scale, n_resblocks=n_resblocks, n_feats=n_feats, res_scale=res_scale)
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="Restoration" if scale == 1 else "SR",
            tags=[f"{n_feats}nf", f"{n_resblocks}nb"],
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=3,
            output_channels=3,
        )

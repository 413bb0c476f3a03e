"""The named architectures, as kdcore students and teachers that *are* spandrel's modules.

Each class inherits from both the kdcore base and the spandrel architecture class, so its state
dict has the architecture's native key names (no prefix): a run folder's ``model.safetensors``
loads in every tool that speaks spandrel, and ``named_modules()`` paths (``body.3``, ``layers.1``)
are the architecture's own. ``Params`` expose the constructor arguments with the defaults of
the light published variant; settings spandrel cannot read back from the weights are fixed to
the values it assumes, so a trained model is detected exactly as it was built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Literal, cast

import pydantic
import torch
from pydantic import Field
from spandrel import SizeRequirements
from spandrel.architectures.Compact import Compact
from spandrel.architectures.ESRGAN import ESRGAN
from spandrel.architectures.OmniSR import OmniSR
from spandrel.architectures.RCAN import RCAN
from spandrel.architectures.SAFMN import SAFMN
from spandrel.architectures.SPAN import SPAN
from spandrel.architectures.SwinIR import SwinIR

from kdcore.errors import CheckpointError, SpecError
from kdcore.interfaces import Params, Student, Task, Teacher
from kdcore_spandrel.edsr import EDSR
from kdcore_spandrel.loading import arch_name, load_descriptor
from kdcore_spandrel.sizing import InnerPadding, run_sized
from kdcore_spandrel.traceable import safmn_forward, traceable_swin_blocks


class _ArchModel:
    """Mixin: builds the spandrel architecture in place of ``_Model.__init__`` and wraps its forward."""

    arch_cls: ClassVar[type[torch.nn.Module]]
    #: the spandrel architecture id it is detected as
    arch_id: ClassVar[str]
    size_requirements: ClassVar[SizeRequirements] = SizeRequirements()
    Params: ClassVar[type[pydantic.BaseModel]]

    def __init__(self, params: pydantic.BaseModel | None = None, task: Task | None = None) -> None:
        params = params if params is not None else type(self).Params()
        task = task if task is not None else Task(kind="sr", scale=2)
        # the mixin is always combined with the architecture (a Module), see the classes below
        self.arch_cls.__init__(cast(torch.nn.Module, self), **self.arch_kwargs(params, task))
        self.params = params
        self.task = task
        self._described: str | None = None

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        """The architecture's constructor arguments for ``params`` and ``task``."""
        raise NotImplementedError

    def inner_padding(self) -> InnerPadding | None:
        """The padding the architecture applies itself (to its window), which ONNX export writes
        into the graph on dynamic sizes; None where it pads nothing."""
        return None

    def traced_forward(self, x: torch.Tensor) -> torch.Tensor:
        """The architecture's forward while traced for ONNX export (the same computation)."""
        return self.arch_cls.forward(self, x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """B×3×h×w in [0, 1] -> B×3×(h·s)×(w·s); clamped to [0, 1] in eval mode (training sees the raw output)."""

        def net(t: torch.Tensor) -> torch.Tensor:
            if torch.jit.is_tracing():
                return self.traced_forward(t)
            return self.arch_cls.forward(self, t)

        return run_sized(
            net,
            x,
            self.task.scale,
            self.size_requirements,
            clamp=not self.training,  # type: ignore[attr-defined]
            inner=self.inner_padding(),
        )


class _ArchTeacher(_ArchModel):
    """A named architecture as teacher: a kdcore run folder or any checkpoint of that architecture."""

    def load_checkpoint(self, path: Path, *, where: str) -> None:
        """Reads ``path`` without running code, checks architecture and scale, loads the weights."""
        descriptor = load_descriptor(Path(path), self.task, where=where)
        at = f"{where}: " if where else ""
        if descriptor.architecture.id != self.arch_id:
            raise CheckpointError(
                f"{at}{path} is a {arch_name(descriptor)} model, not {self.arch_id}; use the teacher name "
                "'spandrel', which takes the architecture from the file"
            )
        state = descriptor.model.state_dict()
        own = self.state_dict()  # type: ignore[attr-defined]
        if state.keys() != own.keys() or any(state[k].shape != own[k].shape for k in own):
            mine: dict = getattr(self, "hyperparameters", {})
            theirs: dict = getattr(descriptor.model, "hyperparameters", {})
            diffs = [
                f"{k}={theirs[k]!r} (params: {mine[k]!r})"
                for k in theirs
                if k in mine and theirs[k] != mine[k] and k != "drop_path_rate"
            ]
            raise CheckpointError(
                f"{at}{path} is {self.arch_id} with other settings: {', '.join(diffs) or 'different layer shapes'}; "
                f"set {where.rsplit('.', 1)[0] or 'teacher'}.params to match, or use the teacher name 'spandrel'"
            )
        self.load_state_dict(state)  # type: ignore[attr-defined]
        n = sum(p.numel() for p in descriptor.model.parameters())
        self._described = (
            f"{arch_name(descriptor)} ×{descriptor.scale}, {n:,} parameters ({', '.join(descriptor.tags)})"
        )

    def describe(self) -> str | None:
        """Detected architecture, scale and parameter count of the loaded checkpoint."""
        return self._described


# --- EDSR ---------------------------------------------------------------------------------------


class EDSRParams(Params):
    n_resblocks: int = Field(16, ge=1, description="residual blocks (EDSR-baseline 16, EDSR 32)")
    n_feats: int = Field(
        64,
        ge=4,
        description="feature channels (EDSR-baseline 64, EDSR 256; from 256 on, "
        "residuals are scaled by 0.1 as in the paper)",
    )


class _EDSR(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = EDSRParams
    arch_cls = EDSR
    arch_id = "EDSR"

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        return {
            "scale": task.scale,
            "n_resblocks": params.n_resblocks,
            "n_feats": params.n_feats,
            "res_scale": 0.1 if params.n_feats >= 256 else 1.0,
        }


class EDSRStudent(_EDSR, Student, EDSR):
    """EDSR (Lim et al. 2017); default EDSR-baseline."""


class EDSRTeacher(_ArchTeacher, _EDSR, Teacher, EDSR):
    """EDSR as teacher (original or BasicSR checkpoints, or a kdcore run folder)."""


# --- RCAN ---------------------------------------------------------------------------------------


class RCANParams(Params):
    n_resgroups: int = Field(5, ge=1, description="residual groups (the paper's RCAN: 10; light default 5)")
    n_resblocks: int = Field(
        10, ge=1, description="channel-attention blocks per group (paper: 20; light default 10)"
    )
    n_feats: int = Field(64, ge=16, description="feature channels (paper: 64)")
    reduction: int = Field(16, ge=1, description="channel-attention reduction ratio (paper: 16)")


class _RCAN(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = RCANParams
    arch_cls = RCAN
    arch_id = "RCAN"

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        if params.n_feats % params.reduction:
            raise SpecError(
                f"rcan: n_feats ({params.n_feats}) must be a multiple of reduction ({params.reduction})"
            )
        # rgb_range 255, res_scale 1 and ReLU are what spandrel assumes (they leave no trace in the weights)
        return {
            "scale": task.scale,
            "n_resgroups": params.n_resgroups,
            "n_resblocks": params.n_resblocks,
            "n_feats": params.n_feats,
            "reduction": params.reduction,
            "rgb_range": 255,
            "norm": True,
        }


class RCANStudent(_RCAN, Student, RCAN):
    """RCAN (Zhang et al. 2018), residual channel-attention network; fewer groups by default."""


class RCANTeacher(_ArchTeacher, _RCAN, Teacher, RCAN):
    """RCAN as teacher."""


# --- SwinIR -------------------------------------------------------------------------------------


class SwinIRParams(Params):
    embed_dim: int = Field(60, ge=6, description="token channels (SwinIR-lightweight 60, classical 180)")
    depths: list[int] = Field([6, 6, 6, 6], min_length=1, description="Swin blocks per residual group")
    num_heads: list[int] = Field([6, 6, 6, 6], min_length=1, description="attention heads per group")
    window_size: int = Field(8, ge=2, description="attention window side (lightweight and classical SR: 8)")
    mlp_ratio: float = Field(
        2.0, gt=0, description="MLP hidden size / embed_dim (lightweight 2, classical 4)"
    )
    img_size: int = Field(
        64,
        ge=4,
        description="training patch side the shifted-window mask is built for (a "
        "multiple of window_size, larger than it); other sizes work",
    )
    upsampler: Literal["pixelshuffledirect", "pixelshuffle", "nearest+conv"] = Field(
        "pixelshuffledirect",
        description="lightweight: pixelshuffledirect; classical: pixelshuffle; real-world ×4: nearest+conv",
    )
    drop_path_rate: float = Field(0.1, ge=0, lt=1, description="stochastic depth during training")

    @pydantic.model_validator(mode="after")
    def _check(self) -> SwinIRParams:
        if len(self.depths) != len(self.num_heads):
            raise ValueError("depths and num_heads must have the same length")
        if any(self.embed_dim % h for h in self.num_heads):
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by every num_heads entry")
        if self.img_size % self.window_size or self.img_size <= self.window_size:
            raise ValueError(
                "img_size must be a multiple of window_size and larger than it "
                "(spandrel reads img_size back from the attention mask)"
            )
        if self.depths[0] < 2:
            raise ValueError(
                "depths[0] must be at least 2 (the shifted block is how spandrel reads img_size back)"
            )
        return self


class _SwinIR(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = SwinIRParams
    arch_cls = SwinIR
    arch_id = "SwinIR"
    size_requirements = SizeRequirements(minimum=16)

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        upsampler = params.upsampler if task.scale > 1 else ""
        if upsampler == "nearest+conv" and task.scale != 4:
            raise SpecError(
                "swinir: upsampler 'nearest+conv' is for ×4 only; use pixelshuffle or pixelshuffledirect"
            )
        # spandrel reads a window of 7 as a JPEG model working on [0, 255]: follow it so the
        # weights are detected back exactly
        return {
            "img_size": params.img_size,
            "embed_dim": params.embed_dim,
            "depths": list(params.depths),
            "num_heads": list(params.num_heads),
            "window_size": params.window_size,
            "mlp_ratio": params.mlp_ratio,
            "upscale": task.scale,
            "upsampler": upsampler,
            "img_range": 255.0 if params.window_size == 7 else 1.0,
            "resi_connection": "1conv",
            "drop_path_rate": params.drop_path_rate,
            "in_chans": 3,
        }

    def inner_padding(self) -> InnerPadding | None:
        # SwinIR.check_image_size: reflect to a multiple of the window
        return (self.window_size, "reflect")  # type: ignore[attr-defined]

    def traced_forward(self, x: torch.Tensor) -> torch.Tensor:
        # spandrel's window_reverse freezes the batch size (int(...)) and its mask is built by
        # slice assignments: the blocks run a dynamic-size version of the same computation
        with traceable_swin_blocks(cast(torch.nn.Module, self)):
            return self.arch_cls.forward(self, x)


class SwinIRStudent(_SwinIR, Student, SwinIR):
    """SwinIR (Liang et al. 2021); default SwinIR-lightweight. Blocks under ``layers.N`` emit tokens
    (B×HW×C); their ``layers.N.conv`` outputs are feature maps."""


class SwinIRTeacher(_ArchTeacher, _SwinIR, Teacher, SwinIR):
    """SwinIR as teacher."""


# --- ESRGAN (RRDBNet) ---------------------------------------------------------------------------


class ESRGANParams(Params):
    num_filters: int = Field(64, ge=8, description="feature channels (ESRGAN 64)")
    num_blocks: int = Field(
        6, ge=1, description="RRDB blocks (ESRGAN 23; light default 6, as Real-ESRGAN's anime 6B)"
    )


class _ESRGAN(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = ESRGANParams
    arch_cls = ESRGAN
    arch_id = "ESRGAN"
    size_requirements = SizeRequirements(minimum=2)

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        if task.scale == 3:
            raise SpecError(
                "esrgan: ×3 is not offered: spandrel reads an RRDBNet's scale from its count of "
                "×2 upsampling stages, so a ×3 model would not be detected back; use ×2 or ×4, "
                "or another architecture (e.g. rcan, swinir) for ×3"
            )
        return {
            "in_nc": 3,
            "out_nc": 3,
            "num_filters": params.num_filters,
            "num_blocks": params.num_blocks,
            "scale": task.scale,
        }


class ESRGANStudent(_ESRGAN, Student, ESRGAN):
    """RRDBNet of ESRGAN (Wang et al. 2018); ×2 and ×4 (and ×1)."""


class ESRGANTeacher(_ArchTeacher, _ESRGAN, Teacher, ESRGAN):
    """RRDBNet (ESRGAN, Real-ESRGAN, BSRGAN checkpoints) as teacher."""


# --- SPAN ---------------------------------------------------------------------------------------


class SPANParams(Params):
    feature_channels: int = Field(28, ge=4, description="feature channels (SPAN 48; light default 28)")


class _SPAN(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = SPANParams
    arch_cls = SPAN
    arch_id = "SPAN"

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        # img_range 255 and the DIV2K mean are what spandrel assumes
        return {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "feature_channels": params.feature_channels,
            "upscale": task.scale,
            "norm": True,
        }

    def __init__(self, params: pydantic.BaseModel | None = None, task: Task | None = None) -> None:
        super().__init__(params, task)
        # the re-parameterised 3×3 convolutions are recomputed from the trained branches at eval
        # time and take no part in training: without a gradient they must not be trainable
        # (DistributedDataParallel fails on trainable parameters that get no gradient)
        for name, p in self.named_parameters():  # type: ignore[attr-defined]
            if ".eval_conv." in f".{name}":
                p.requires_grad_(False)


class SPANStudent(_SPAN, Student, SPAN):
    """SPAN (Wan et al. 2024), swift parameter-free attention network."""


class SPANTeacher(_ArchTeacher, _SPAN, Teacher, SPAN):
    """SPAN as teacher."""


# --- Compact (SRVGGNetCompact) ------------------------------------------------------------------


class CompactParams(Params):
    num_feat: int = Field(64, ge=4, description="feature channels (Real-ESRGAN compact: 64)")
    num_conv: int = Field(
        16, ge=1, description="body convolutions (realesr-animevideov3 16, general-x4v3 32)"
    )
    act_type: Literal["prelu"] = Field(
        "prelu", description="activation; only PReLU leaves weights by which spandrel detects the model back"
    )


class _Compact(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = CompactParams
    arch_cls = Compact
    arch_id = "Compact"

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        return {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": params.num_feat,
            "num_conv": params.num_conv,
            "upscale": task.scale,
            "act_type": params.act_type,
        }


class CompactStudent(_Compact, Student, Compact):
    """SRVGGNetCompact (Real-ESRGAN's compact network): plain convolutions, a pixel shuffle."""


class CompactTeacher(_ArchTeacher, _Compact, Teacher, Compact):
    """SRVGGNetCompact as teacher."""


# --- SAFMN --------------------------------------------------------------------------------------


class SAFMNParams(Params):
    dim: int = Field(36, ge=4, description="feature channels (SAFMN 36, SAFMN-L 128)")
    n_blocks: int = Field(8, ge=1, description="feature-modulation blocks (SAFMN 8, SAFMN-L 16)")
    ffn_scale: float = Field(2.0, gt=0, description="convolutional channel mixer expansion")


class _SAFMN(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = SAFMNParams
    arch_cls = SAFMN
    arch_id = "SAFMN"
    size_requirements = SizeRequirements(multiple_of=8)

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        return {
            "dim": params.dim,
            "n_blocks": params.n_blocks,
            "ffn_scale": params.ffn_scale,
            "upscaling_factor": task.scale,
        }

    def traced_forward(self, x: torch.Tensor) -> torch.Tensor:
        # adaptive pooling to a size computed from the input does not export; on inputs padded
        # to a multiple of 8 it is a fixed max pooling
        return safmn_forward(cast(SAFMN, self), x)


class SAFMNStudent(_SAFMN, Student, SAFMN):
    """SAFMN (Sun et al. 2023), spatially-adaptive feature modulation."""


class SAFMNTeacher(_ArchTeacher, _SAFMN, Teacher, SAFMN):
    """SAFMN as teacher."""


# --- OmniSR -------------------------------------------------------------------------------------


class OmniSRParams(Params):
    num_feat: int = Field(64, ge=8, description="feature channels (Omni-SR 64)")
    res_num: int = Field(5, ge=1, description="omni-scale groups (Omni-SR 5)")
    block_num: int = Field(1, ge=1, description="omni self-attention blocks per group (Omni-SR 1)")
    window_size: int = Field(8, ge=2, description="attention window side (Omni-SR 8)")


class _OmniSR(_ArchModel):
    Params: ClassVar[type[pydantic.BaseModel]] = OmniSRParams
    arch_cls = OmniSR
    arch_id = "OmniSR"
    size_requirements = SizeRequirements(minimum=16)

    @classmethod
    def arch_kwargs(cls, params: Any, task: Task) -> dict[str, Any]:
        return {
            "num_in_ch": 3,
            "num_out_ch": 3,
            "num_feat": params.num_feat,
            "block_num": params.block_num,
            "res_num": params.res_num,
            "window_size": params.window_size,
            "up_scale": task.scale,
            "pe": True,
            "bias": True,
        }

    def inner_padding(self) -> InnerPadding | None:
        # OmniSR.check_image_size: zeros to a multiple of the window
        return (self.window_size, "constant")  # type: ignore[attr-defined]


class OmniSRStudent(_OmniSR, Student, OmniSR):
    """Omni-SR (Wang et al. 2023), omni self-attention."""


class OmniSRTeacher(_ArchTeacher, _OmniSR, Teacher, OmniSR):
    """Omni-SR as teacher."""


#: registered name -> (student class, teacher class, summary)
ARCHITECTURES: dict[str, tuple[type[Student], type[Teacher], str]] = {
    "edsr": (EDSRStudent, EDSRTeacher, "EDSR (Lim et al. 2017); default EDSR-baseline"),
    "rcan": (
        RCANStudent,
        RCANTeacher,
        "RCAN residual channel attention (Zhang et al. 2018); 5 groups by default",
    ),
    "swinir": (
        SwinIRStudent,
        SwinIRTeacher,
        "SwinIR Swin-transformer restoration (Liang et al. 2021); default lightweight",
    ),
    "esrgan": (
        ESRGANStudent,
        ESRGANTeacher,
        "RRDBNet of ESRGAN / Real-ESRGAN (Wang et al. 2018); ×2, ×4; 6 blocks by default",
    ),
    "span": (
        SPANStudent,
        SPANTeacher,
        "SPAN parameter-free attention (Wan et al. 2024); 28 channels by default",
    ),
    "compact": (
        CompactStudent,
        CompactTeacher,
        "SRVGGNetCompact of Real-ESRGAN: plain convs + pixel shuffle",
    ),
    "safmn": (SAFMNStudent, SAFMNTeacher, "SAFMN feature modulation (Sun et al. 2023)"),
    "omnisr": (OmniSRStudent, OmniSRTeacher, "Omni-SR omni self-attention (Wang et al. 2023)"),
}

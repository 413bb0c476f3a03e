"""Teacher ``spandrel``: any checkpoint spandrel detects (plus EDSR), architecture read from the file."""

from __future__ import annotations

from pathlib import Path

import torch
from spandrel import ImageModelDescriptor, SizeRequirements

from kdcore.errors import SpecError
from kdcore.interfaces import Task, Teacher
from kdcore_spandrel.loading import arch_name, load_descriptor
from kdcore_spandrel.sizing import run_sized

#: architectures whose forward pads the input to their window size itself (mirrored, as their
#: authors evaluate them): padding to spandrel's ``multiple_of`` first would add a second pad
#: and cost accuracy (CRAFT ×4 on Set5: 32.39 instead of 32.42 dB) and time
SELF_PADDING = frozenset({"CRAFT"})


class SpandrelTeacher(Teacher):
    """A pretrained SR (or, for ``enhance``, ×1 restoration) network from a checkpoint file.

    After :meth:`load_checkpoint` this module shares the detected network's parameters,
    buffers and submodules, so its module paths are the architecture's own (``body.3``, not
    ``model.body.3``) and ``.to()``, ``eval()`` and ``state_dict()`` act on the network.
    The forward calls the network itself (not spandrel's inference-mode call), on a padded copy
    of the input, and crops back; architectures that pad to their window size themselves
    (:data:`SELF_PADDING`) get the input as it is (padded only up to their minimum size).
    """

    def __init__(self, params=None, task: Task | None = None) -> None:
        super().__init__(params, task)
        self._net: torch.nn.Module | None = None
        self._size = SizeRequirements()
        self._described: str | None = None

    def load_checkpoint(self, path: Path, *, where: str) -> None:
        """Reads ``path`` without running code; the architecture and scale must fit the task."""
        descriptor: ImageModelDescriptor = load_descriptor(Path(path), self.task, where=where)
        net = descriptor.model
        object.__setattr__(self, "_net", net)  # not a submodule: its contents become this module's
        self._parameters = net._parameters
        self._buffers = net._buffers
        self._non_persistent_buffers_set = net._non_persistent_buffers_set
        self._modules = net._modules
        self._size = descriptor.size_requirements
        if descriptor.architecture.id in SELF_PADDING:
            self._size = SizeRequirements(minimum=self._size.minimum)
        n = sum(p.numel() for p in net.parameters())
        tags = f" ({', '.join(descriptor.tags)})" if descriptor.tags else ""
        self._described = f"{arch_name(descriptor)} ×{descriptor.scale}, {n:,} parameters{tags}"
        self.train(self.training)

    @classmethod
    def example_checkpoint(cls, folder: Path, task: Task) -> Path:
        """A small random-initialised Real-ESRGAN Compact checkpoint for ``task`` (conformance tests)."""
        from safetensors.torch import save_file
        from spandrel.architectures.Compact import Compact

        net = Compact(num_in_ch=3, num_out_ch=3, num_feat=8, num_conv=2, upscale=task.scale)
        path = Path(folder) / "compact.safetensors"
        save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
        return path

    def train(self, mode: bool = True) -> SpandrelTeacher:
        super().train(mode)
        if self._net is not None:
            self._net.training = mode
        return self

    def describe(self) -> str | None:
        """E.g. ``RCAN ×2, 15,444,667 parameters (64nf, 10nrg, 20nrb)``."""
        return self._described

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._net is None:
            raise SpecError(
                "teacher 'spandrel' has no network yet: give teacher.checkpoint (a .pth, .pt, .ckpt "
                "or .safetensors file; for kdcore inspect: --checkpoint)"
            )
        return run_sized(self._net, x, self.task.scale, self._size, clamp=True)

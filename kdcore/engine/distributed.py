"""torch.distributed when launched by torchrun: rank, world size, device, barriers."""

from __future__ import annotations

import os

import torch


def init_distributed(device: torch.device) -> tuple[int, int, torch.device]:
    """(rank, world size, device) — initialises torch.distributed when launched by torchrun."""
    import torch.distributed as dist

    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1, device
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return dist.get_rank(), dist.get_world_size(), device


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()

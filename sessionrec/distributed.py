"""Data-parallel training under `torchrun` (PyTorch DistributedDataParallel): gloo on CPU, NCCL on GPU.

    torchrun --nproc-per-node 2 -m sessionrec.cli train DATA --out runs/ddp            # 2 processes, one node
    torchrun --nnodes 2 --node-rank R --master-addr HOST --nproc-per-node 8 -m sessionrec.cli train ...

Every rank draws the same global batches (same seed) and trains on its stride of each one; DDP
averages the gradients, so a step sees the whole global batch, as one process would (up to the order
of floating-point sums, and the mean of unequal shards when a batch does not split evenly). Every
rank evaluates the same synchronised weights, so all take the same selection and stopping decisions
without messages; rank 0 alone writes files. Outside torchrun (WORLD_SIZE unset or 1) nothing changes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import torch


@dataclass(frozen=True)
class Group:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def setup() -> Group:
    """The process group torchrun describes in the environment (initialised once), or a group of one."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    cuda = torch.cuda.is_available()
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if cuda else torch.device("cpu")
    if world <= 1:
        return Group(device=device)
    import torch.distributed as dist

    if not dist.is_initialized():
        if cuda:
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return Group(dist.get_rank(), dist.get_world_size(), device)


def wrap(model: torch.nn.Module, group: Group) -> torch.nn.Module:
    """The module to train through: DDP in a group, the model itself otherwise."""
    if not group.distributed:
        return model
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(model, device_ids=[group.device.index] if group.device.type == "cuda" else None)


def shard(batch: np.ndarray, group: Group) -> np.ndarray:
    """This rank's stride of a global batch."""
    return batch[group.rank :: group.world] if group.distributed else batch


def usable(batches: list[np.ndarray], group: Group) -> list[np.ndarray]:
    """Global batches every rank gets a share of (a smaller last batch would leave a rank without
    work, and DDP needs every rank in every backward)."""
    return [b for b in batches if len(b) >= group.world] if group.distributed else batches


def barrier(group: Group) -> None:
    if group.distributed:
        import torch.distributed as dist

        dist.barrier()

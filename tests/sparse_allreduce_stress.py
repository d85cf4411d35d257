"""One rank of the sparse all-reduce stress test (``torchrun --nproc_per_node 2``; see
``tests/test_distributed.py::test_sparse_gradients_survive_thousands_of_all_reduces``).

Tables of the model's shape (factors and biases, sparse), wrapped by :func:`cfmodel.train.sparse_hook.data_parallel`
as the trainer wraps its loss, take ``STEPS`` backward passes of batches whose sizes differ between the
ranks; then each rank writes ``<dir>/rank<r>.json``: the communication hook DDP reports and the sum of its
averaged gradients, which must agree. Arguments: the steps, the directory."""
import json
import os
import sys

import torch
import torch.distributed as dist

from cfmodel.train.sparse_hook import data_parallel


class Tables(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.u, self.i = torch.nn.Embedding(400, 50, sparse=True), torch.nn.Embedding(300, 50, sparse=True)
        self.ub, self.ib = torch.nn.Embedding(400, 1, sparse=True), torch.nn.Embedding(300, 1, sparse=True)

    def forward(self, u: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
        pred = (self.u(u) * self.i(i)).sum(1) + self.ub(u).squeeze(1) + self.ib(i).squeeze(1)
        return pred.pow(2).mean()


def main() -> None:
    dist.init_process_group("gloo")
    rank = dist.get_rank()
    torch.manual_seed(0)
    model = data_parallel(Tables())
    draw = torch.Generator().manual_seed(rank + 1)
    total = 0.0
    for _ in range(int(sys.argv[1])):
        n = int(torch.randint(1, 600, (1,), generator=draw))
        model(torch.randint(0, 400, (n,), generator=draw), torch.randint(0, 300, (n,), generator=draw)).backward()
        total += sum(float(p.grad.coalesce().values().sum()) for p in model.parameters())
        model.zero_grad(set_to_none=True)
    hook = model._get_ddp_logging_data().get("comm_hook")  # DDP's own record of the hook in force
    with open(os.path.join(sys.argv[2], f"rank{rank}.json"), "w") as fh:
        json.dump({"hook": hook, "gradient_sum": total}, fh)
    # As rank_main's broadcast of the result does: a rank that tore its group down while the other was still
    # writing aborted that one ('terminate called without an active exception', 1 run of 8; 0 of 10 with it).
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()

"""AdamW whose cost per step follows the batch, not the tables: lazy row updates, exact weight decay.

Dense AdamW updates every row of every embedding table at every step, so a
step costs the tables' size: at the MovieLens-20M shape (165,000 rows of 50
factors) that capped training near 130k ratings/s on two cores, against 420k
on small tables. :class:`SparseAdamW` takes the sparse gradients the tables
give with ``nn.Embedding(sparse=True)`` and updates only the rows a batch
touched:

- Adam's moments of a row move only when the row has a gradient ("lazy Adam",
  as in TensorFlow's LazyAdam and torch's SparseAdam); the bias corrections
  count the optimiser's steps.
- Decoupled weight decay is exact: a row owes ``(1 - lr_t · wd)`` for every step
  ``t`` since it was last updated, whatever the schedule did to ``lr_t``. The
  optimiser keeps the running sum of ``log(1 - lr_t · wd)`` and, per row, the
  sum at which the row was last settled; a touched row first pays what it
  owes. :meth:`SparseAdamW.settle` makes every row pay, and must run before
  the weights are read (validation, checkpoints, export): the trainer calls it
  at the end of every epoch.

A row touched at every step gets exactly ``torch.optim.AdamW``'s update, and a
parameter whose gradient is dense (a network layer) is updated as AdamW does.
Groups with ``l2=True`` add ``weight_decay · w`` to the gradient instead (Adam's
coupled decay), for ``train.wd_mode: l2``.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional

import torch


class SparseAdamW(torch.optim.Optimizer):
    """AdamW over the rows each step's (sparse or dense) gradients touch; see the module docstring."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, l2: bool = False) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, l2=l2))

    def _state(self, p: torch.Tensor) -> Dict[str, Any]:
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)  # as torch's fused AdamW
            state["exp_avg"] = torch.zeros_like(p)
            state["exp_avg_sq"] = torch.zeros_like(p)
            # The decay ledger: the running sum of log(1 - lr·wd) and each row's sum when it last paid.
            state["log_decay"] = 0.0
            state["settled"] = torch.zeros(p.shape[0] if p.dim() else 1, dtype=torch.float64, device=p.device)
        return state

    @torch.no_grad()
    def step(self, closure=None) -> Optional[float]:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        merged: Dict[tuple, tuple] = {}  # a side's factor and bias tables share the batch's indices
        for group in self.param_groups:
            lr, wd = group["lr"], group["weight_decay"]
            decoupled = wd and not group["l2"]
            if decoupled and lr * wd >= 1.0:
                raise ValueError(f"lr × weight_decay = {lr * wd:.3g} >= 1 would flip the weights' sign")
            shrink = math.log1p(-lr * wd) if decoupled else 0.0
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            gathered = [self._gather(p, shrink, group, merged) for p in params]
            weights, grads, exp_avgs, exp_avg_sqs, steps, _ = zip(*gathered)
            beta1, beta2 = group["betas"]
            # torch.optim.AdamW(fused=True)'s kernel, on the gathered rows; the decay was paid in _gather.
            torch._fused_adamw_(list(weights), list(grads), list(exp_avgs), list(exp_avg_sqs), [], list(steps),
                                lr=lr, beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                                amsgrad=False, maximize=False)
            for p, (w, _, m, v, _, rows) in zip(params, gathered):
                self._scatter(p, rows, w, m, v)
        return loss

    def _gather(self, p: torch.Tensor, shrink: float, group: Dict[str, Any], merged: Dict[tuple, tuple]):
        """(rows of p, gradient, exp_avg, exp_avg_sq, step, row indices or None): copies of the rows a sparse
        gradient touches (views of the whole tensor for a dense one), each row's owed decay paid."""
        state = self._state(p)
        state["step"].add_(1)
        state["log_decay"] += shrink
        if p.grad.is_sparse:
            rows, grad = _summed_rows(p.grad, merged)
            weights = p.index_select(0, rows)
            exp_avg, exp_avg_sq = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
        else:
            rows, grad, weights, exp_avg, exp_avg_sq = None, p.grad, p, state["exp_avg"], state["exp_avg_sq"]
        if state["log_decay"]:  # 0.0 while the group has no decoupled decay: nothing is owed
            settled = state["settled"] if rows is None else state["settled"].index_select(0, rows)
            _pay_owed(weights, state["log_decay"], settled)
            if rows is None:
                state["settled"].fill_(state["log_decay"])
            else:
                state["settled"].index_fill_(0, rows, state["log_decay"])
        if group["l2"] and group["weight_decay"]:
            grad = grad.add(weights, alpha=group["weight_decay"])
        return weights, grad, exp_avg, exp_avg_sq, state["step"], rows

    def _scatter(self, p: torch.Tensor, rows: Optional[torch.Tensor], weights, exp_avg, exp_avg_sq) -> None:
        """Write updated row copies back (nothing to do for a dense gradient: it was updated in place)."""
        if rows is not None:
            p.index_copy_(0, rows, weights)
            self.state[p]["exp_avg"].index_copy_(0, rows, exp_avg)
            self.state[p]["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)

    @torch.no_grad()
    def settle(self) -> None:
        """Apply to every row the decay it owes, so the weights are what dense AdamW would hold."""
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state.get(p)
                if not state:
                    continue
                _pay_owed(p, state["log_decay"], state["settled"])
                # Every row is even: start the ledger again from 0, which keeps its sums small.
                state["settled"].zero_()
                state["log_decay"] = 0.0

    def load_state_dict(self, state_dict: Dict[str, Any]) -> None:
        super().load_state_dict(state_dict)
        # Optimizer.load_state_dict casts floating-point state to the parameter's dtype; the ledger is float64.
        saved = [i for g in state_dict["param_groups"] for i in g["params"]]
        params = [p for g in self.param_groups for p in g["params"]]
        for key, p in zip(saved, params):
            if "settled" in state_dict["state"].get(key, {}):
                self.state[p]["settled"] = state_dict["state"][key]["settled"].to(p.device, torch.float64)


def _pay_owed(weights: torch.Tensor, log_decay: float, settled: torch.Tensor) -> None:
    """Shrink each row of ``weights`` in place by the decay owed since its ledger entry ``settled``."""
    owed = (log_decay - settled).exp().to(weights.dtype)
    weights.mul_(owed.view(-1, *[1] * (weights.dim() - 1)) if weights.dim() else owed)


def _summed_rows(grad: torch.Tensor, merged: Dict[tuple, tuple]) -> tuple:
    """(distinct rows, their summed gradient rows) of an embedding's sparse gradient. Tables looked up
    with the same index tensor (a side's factors and bias) share one ``unique`` per step."""
    indices = grad._indices()[0]
    key = (indices.data_ptr(), indices.numel(), indices.device)
    if key not in merged:
        merged[key] = torch.unique(indices, return_inverse=True)
    rows, inverse = merged[key]
    values = grad._values()
    summed = values.new_zeros((len(rows),) + values.shape[1:]).index_add_(0, inverse, values)
    return rows, summed


def settle(opt: torch.optim.Optimizer) -> None:
    """Settle ``opt``'s owed decay if it keeps any (dense optimisers do not)."""
    if isinstance(opt, SparseAdamW):
        opt.settle()

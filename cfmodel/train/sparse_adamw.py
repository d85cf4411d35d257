"""AdamW whose cost per step follows the batch, not the tables: lazy row updates, exact weight decay.

Dense AdamW updates every row of every embedding table at every step, so a
step costs the tables' size: at the MovieLens-20M shape (165,000 rows of 50
factors) that dominates the step (``bench/bench_trainer.py --row-updates``).
:class:`SparseAdamW` takes the sparse gradients the tables give with
``nn.Embedding(sparse=True)`` and updates only the rows a batch touched:

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

Tables that a step looks up with the same indices (a side's factors, bias and
ranking head) can share one storage (:func:`share_rows`: each table's weight
becomes a column range of one tensor, and so do its moments): the optimiser
then gathers, updates and writes back such a :class:`RowSet`'s rows once, not
once per table, with each table's own decay paid on its columns. The result is
the per-table update's (to float rounding: the fused kernel splits a wider row
into vector lanes differently); a step where the tables' gradients do not
share their indices takes the per-table path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn


@dataclass
class RowSet:
    """Parameters that are column ranges ``(param, start, stop)`` of one ``base`` tensor; ``exp_avg`` and
    ``exp_avg_sq`` are laid out alike, so their per-parameter moments are column ranges of them too."""

    base: torch.Tensor
    members: List[Tuple[nn.Parameter, int, int]]
    exp_avg: torch.Tensor
    exp_avg_sq: torch.Tensor


def share_rows(tables: Sequence[nn.Embedding]) -> RowSet:
    """Give ``tables`` (same number of rows, looked up with the same indices) one storage: each weight
    becomes a column range of one tensor, with its values kept. Build the optimiser after this."""
    base = torch.cat([t.weight.detach() for t in tables], dim=1).contiguous()
    members, start = [], 0
    for table in tables:
        stop = start + table.weight.shape[1]
        table.weight = nn.Parameter(base[:, start:stop], requires_grad=table.weight.requires_grad)
        members.append((table.weight, start, stop))
        start = stop
    return RowSet(base, members, torch.zeros_like(base), torch.zeros_like(base))


class SparseAdamW(torch.optim.Optimizer):
    """AdamW over the rows each step's (sparse or dense) gradients touch; see the module docstring."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, l2: bool = False, row_sets: Sequence[RowSet] = ()) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, l2=l2))
        self.row_sets = list(row_sets)
        # A set whose members once stepped apart (one had a gradient, another not) keeps per-table steps.
        self.set_ok = [True] * len(self.row_sets)
        self._link_row_sets()

    def _link_row_sets(self) -> None:
        """Make each set member's moments the column ranges of its set's (keeping any values they hold)."""
        for rs in self.row_sets:
            for p, start, stop in rs.members:
                state = self._state(p)
                for key in ("exp_avg", "exp_avg_sq"):
                    view = getattr(rs, key)[:, start:stop]
                    view.copy_(state[key])
                    state[key] = view

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
        groups = {id(p): g for g in self.param_groups for p in g["params"]}
        shrinks = {id(g): _shrink(g) for g in self.param_groups}
        done = set()
        for k, rs in enumerate(self.row_sets):
            if self.set_ok[k] and self._step_set(k, rs, groups, shrinks, merged):
                done.update(id(p) for p, _, _ in rs.members)
        for group in self.param_groups:
            shrink = shrinks[id(group)]
            params = [p for p in group["params"] if p.grad is not None and id(p) not in done]
            if not params:
                continue
            gathered = [self._gather(p, shrink, group, merged) for p in params]
            weights, grads, exp_avgs, exp_avg_sqs, steps, _ = zip(*gathered)
            _adamw(weights, grads, exp_avgs, exp_avg_sqs, steps, group)
            for p, (w, _, m, v, _, rows) in zip(params, gathered):
                self._scatter(p, rows, w, m, v)
        return loss

    def _step_set(self, k: int, rs: RowSet, groups: Dict[int, dict], shrinks: Dict[int, float],
                  merged: Dict[tuple, tuple]) -> bool:
        """AdamW on a row set's rows in one pass; False (nothing done) when this step's gradients do not
        allow it: not all sparse over the same indices, or groups that differ in more than weight decay."""
        grads = [p.grad for p, _, _ in rs.members]
        if any(g is None for g in grads):
            self.set_ok[k] = all(g is None for g in grads)  # stepping apart would split their step counts
            return False
        member_groups = [groups[id(p)] for p, _, _ in rs.members]
        if not _one_pass(grads, member_groups):
            return False
        rows, grad = _summed_rows(grads[0]._indices()[0], torch.cat([g._values() for g in grads], dim=1), merged)
        weights = rs.base.index_select(0, rows)
        exp_avg, exp_avg_sq = rs.exp_avg.index_select(0, rows), rs.exp_avg_sq.index_select(0, rows)
        states = [self._advance(p, shrinks[id(group)], weights[:, start:stop], rows)
                  for (p, start, stop), group in zip(rs.members, member_groups)]
        # Every member stepped together so far, so the first's step count is every member's.
        _adamw([weights], [grad], [exp_avg], [exp_avg_sq], [states[0]["step"]], member_groups[0])
        rs.base.index_copy_(0, rows, weights)
        rs.exp_avg.index_copy_(0, rows, exp_avg)
        rs.exp_avg_sq.index_copy_(0, rows, exp_avg_sq)
        return True

    def _gather(self, p: torch.Tensor, shrink: float, group: Dict[str, Any], merged: Dict[tuple, tuple]):
        """(rows of p, gradient, exp_avg, exp_avg_sq, step, row indices or None): copies of the rows a sparse
        gradient touches (views of the whole tensor for a dense one), each row's owed decay paid."""
        state = self._state(p)
        if p.grad.is_sparse:
            rows, grad = _summed_rows(p.grad._indices()[0], p.grad._values(), merged)
            weights = p.index_select(0, rows)
            exp_avg, exp_avg_sq = state["exp_avg"].index_select(0, rows), state["exp_avg_sq"].index_select(0, rows)
        else:
            # The fused kernel updates in place; a shared-storage member (a column range) goes through a copy.
            rows, grad = None, p.grad
            weights, exp_avg, exp_avg_sq = (t.contiguous() for t in (p, state["exp_avg"], state["exp_avg_sq"]))
        self._advance(p, shrink, weights, rows)
        if group["l2"] and group["weight_decay"]:
            grad = grad.add(weights, alpha=group["weight_decay"])
        return weights, grad, exp_avg, exp_avg_sq, state["step"], rows

    def _advance(self, p: torch.Tensor, shrink: float, weights: torch.Tensor,
                 rows: Optional[torch.Tensor]) -> Dict[str, Any]:
        """Count a step of ``p`` and its group's decay (``shrink``), and pay on ``weights`` (``p``'s rows
        ``rows``, or all of them for None) what those rows owe; returns ``p``'s state."""
        state = self._state(p)
        state["step"].add_(1)
        state["log_decay"] += shrink
        if state["log_decay"]:  # 0.0 while the group has no decoupled decay: nothing is owed
            settled = state["settled"] if rows is None else state["settled"].index_select(0, rows)
            _pay_owed(weights, state["log_decay"], settled)
            if rows is None:
                state["settled"].fill_(state["log_decay"])
            else:
                state["settled"].index_fill_(0, rows, state["log_decay"])
        return state

    def _scatter(self, p: torch.Tensor, rows: Optional[torch.Tensor], weights, exp_avg, exp_avg_sq) -> None:
        """Write updated row copies back (for a dense gradient, only copies of non-contiguous tensors)."""
        state = self.state[p]
        if rows is not None:
            p.index_copy_(0, rows, weights)
            state["exp_avg"].index_copy_(0, rows, exp_avg)
            state["exp_avg_sq"].index_copy_(0, rows, exp_avg_sq)
            return
        for kept, updated in ((p, weights), (state["exp_avg"], exp_avg), (state["exp_avg_sq"], exp_avg_sq)):
            if kept is not updated:
                kept.copy_(updated)

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
        self._link_row_sets()  # the loaded moments were new tensors: back into the sets' storage


def _adamw(weights, grads, exp_avgs, exp_avg_sqs, steps, group: Dict[str, Any]) -> None:
    """torch.optim.AdamW(fused=True)'s kernel on gathered rows, without its decay (the ledger paid that)."""
    beta1, beta2 = group["betas"]
    torch._fused_adamw_(list(weights), list(grads), list(exp_avgs), list(exp_avg_sqs), [], list(steps),
                        lr=group["lr"], beta1=beta1, beta2=beta2, weight_decay=0.0, eps=group["eps"],
                        amsgrad=False, maximize=False)


def _one_pass(grads: List[torch.Tensor], groups: List[Dict[str, Any]]) -> bool:
    """Whether a row set's step can be one pass: every gradient sparse over the same index tensor, and
    groups that differ in their decoupled weight decay alone."""
    if not all(g.is_sparse for g in grads):
        return False
    first = grads[0]._indices()
    if any(g._indices().data_ptr() != first.data_ptr() or g._indices().numel() != first.numel() for g in grads):
        return False

    def settings(group):
        return group["lr"], group["betas"], group["eps"]

    return not any(g["l2"] for g in groups) and all(settings(g) == settings(groups[0]) for g in groups)


def _shrink(group: Dict[str, Any]) -> float:
    """``log(1 - lr · wd)``: what a step of the group's decoupled decay multiplies a weight by, in logs."""
    lr, wd = group["lr"], group["weight_decay"]
    if not wd or group["l2"]:
        return 0.0
    if lr * wd >= 1.0:
        raise ValueError(f"lr × weight_decay = {lr * wd:.3g} >= 1 would flip the weights' sign")
    return math.log1p(-lr * wd)


def _pay_owed(weights: torch.Tensor, log_decay: float, settled: torch.Tensor) -> None:
    """Shrink each row of ``weights`` in place by the decay owed since its ledger entry ``settled``."""
    owed = (log_decay - settled).exp().to(weights.dtype)
    weights.mul_(owed.view(-1, *[1] * (weights.dim() - 1)) if weights.dim() else owed)


def _summed_rows(indices: torch.Tensor, values: torch.Tensor, merged: Dict[tuple, tuple]) -> tuple:
    """(distinct rows, their summed gradient rows) of a sparse gradient's row ``indices`` and ``values``.
    Gradients over the same index tensor (a side's tables) share one ``unique`` per step."""
    key = (indices.data_ptr(), indices.numel(), indices.device)
    if key not in merged:
        merged[key] = torch.unique(indices, return_inverse=True)
    rows, inverse = merged[key]
    summed = values.new_zeros((len(rows),) + values.shape[1:]).index_add_(0, inverse, values)
    return rows, summed


def settle(opt: torch.optim.Optimizer) -> None:
    """Settle ``opt``'s owed decay if it keeps any (dense optimisers do not)."""
    if isinstance(opt, SparseAdamW):
        opt.settle()

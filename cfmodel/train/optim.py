"""The optimiser and learning-rate schedule of a training run, and the L2 penalty of ``wd_mode: l2``."""
from __future__ import annotations

from typing import Any, Dict, List, NamedTuple, Optional

import numpy as np
import torch
from torch import nn

from cfmodel.config import TrainConfig
from cfmodel.model.nets import CFModule
from cfmodel.train.sparse_adamw import SparseAdamW, share_rows


def make_optimizer(model: CFModule, cfg: TrainConfig, merge_rows: bool = True,
                   steps_per_epoch: Optional[int] = None) -> torch.optim.Optimizer:
    """AdamW (decoupled decay on every weight) or Adam with L2 on the batch's rows; with
    ``row_updates: sparse`` (:class:`SparseAdamW`) only the table rows a batch touches are updated.

    The decoupled decays are :func:`step_decays` of the run's ``steps_per_epoch`` (None: unscaled).

    In ``l2`` mode the embeddings' penalty is added to the loss by
    :func:`l2_penalty` for the rows a batch touches; other weights (the
    embedding net's layers) get Adam's coupled weight decay. The parameters the
    model names in ``bias_parameters`` decay by ``bias_wd`` instead of ``wd``,
    the ranking head's by ``rank_wd``. With sparse updates and ``merge_rows`` (one process: DDP keeps
    its own view of each weight), the tables a step looks up with the same indices share a storage
    (:func:`row_sets`), updated in one pass instead of once a table.
    """
    sparse = uses_sparse_updates(model, cfg)
    sets = [share_rows(tables) for tables in row_sets(model, cfg)] if sparse and merge_rows else []
    params = list(model.parameters())
    biases = {id(p) for p in model.bias_parameters()}
    head = {id(p) for p in model.rank_head_parameters()}
    tables = {id(t.weight) for _, _, t in model.embeddings()}
    if cfg.wd_mode == "adamw":
        decays = step_decays(cfg, steps_per_epoch)
        groups = [{"params": [p for p in params if id(p) not in biases | head], "weight_decay": decays.wd},
                  {"params": [p for p in params if id(p) in biases], "weight_decay": decays.bias_wd},
                  {"params": [p for p in params if id(p) in head], "weight_decay": decays.rank_wd,
                   "lr": cfg.rank_lr if cfg.rank_lr is not None else cfg.lr}]
    else:
        groups = [{"params": [p for p in params if id(p) in tables], "weight_decay": 0.0},
                  {"params": [p for p in params if id(p) not in tables], "weight_decay": cfg.weight_decay,
                   "l2": True}]
    groups = [g for g in groups if g["params"]]
    for _, _, table in model.embeddings():
        # Sparse updates take sparse gradients: the batch's rows, not a table-sized zero tensor.
        table.sparse = sparse
    if sparse:
        return SparseAdamW(groups, lr=cfg.lr, row_sets=sets)
    for g in groups:
        g.pop("l2", None)
    # The fused kernels (CPU and CUDA) update the dense embedding tables 4-6x faster.
    if cfg.wd_mode == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, fused=True)
    return torch.optim.Adam(groups, lr=cfg.lr, fused=True)


def decay_scale(cfg: TrainConfig, steps_per_epoch: Optional[int]) -> float:
    """What a step's decoupled decay is multiplied by: 1 while an epoch has at most ``wd_epoch_steps`` steps,
    else ``wd_epoch_steps / steps_per_epoch``, so that an epoch pays at most that many steps' decay.

    Why: decoupled decay shrinks every row at every step, but a row moves only at the steps whose batch
    holds one of its ratings. Per-step decay therefore grows with the data's size against the batch: at
    the MovieLens-20M shape (19,500 steps an epoch at batch 1024) it held the factors near zero, close to a
    biases-only model. Capped, a row with n ratings meets about min(n, steps) moves per epoch against the
    same decay on any data set, as on MovieLens small (79 steps), whose tuned ``wd`` the cap leaves exactly
    as it was (``bench/bench_trainer.py --against train.wd_epoch_steps=null`` measures both). 1 too for
    ``wd_mode: l2``, whose penalty is on the batch's rows already, and for an unknown ``steps_per_epoch``.

    Only for the objectives that predict ratings, and not for a hybrid's ranking head (``rank_wd``):
    ranking rows learnt from sampled terms overfit with the lighter decay."""
    cap = cfg.wd_epoch_steps
    if (cfg.wd_mode != "adamw" or not cfg.spec.predicts_ratings or cap is None or not steps_per_epoch
            or steps_per_epoch <= cap):
        return 1.0
    return cap / steps_per_epoch


class StepDecays(NamedTuple):
    """The decoupled decay a step pays: ``scale`` (:func:`decay_scale`) and the three groups' decays."""

    scale: float
    wd: float
    bias_wd: float
    rank_wd: float


def step_decays(cfg: TrainConfig, steps_per_epoch: Optional[int]) -> StepDecays:
    """``wd`` and ``bias_wd`` times :func:`decay_scale`; a hybrid's ``rank_wd`` as it is (its head decays at
    every step: capped too, the lists fell below most popular's at 2M ratings)."""
    scale = decay_scale(cfg, steps_per_epoch)
    return StepDecays(scale, cfg.weight_decay * scale, cfg.bias_wd * scale, cfg.rank_wd)


def row_sets(model: CFModule, cfg: TrainConfig) -> List[List[nn.Embedding]]:
    """The tables a training step looks up with one index tensor: a side's rating factors and bias (a
    ranking-only objective never reads the user bias) with the user's ranking head, and the item ranking
    head with its bias (a hybrid looks them up for the batch's and the drawn items together). Only
    ``wd_mode: adamw``: the l2 mode's coupled decay goes through the gradient, table by table."""
    if cfg.wd_mode != "adamw":
        return []
    (u_weight, u_bias), (i_weight, i_bias) = model.tables("user"), model.tables("item")
    head = model.has_rank_head
    sets = [[u_weight, u_bias if cfg.spec.predicts_ratings else None, model.u_rank if head else None],
            [i_weight, i_bias],
            [model.i_rank, model.r_bias] if head else []]
    return [found for found in ([t for t in s if t is not None] for s in sets) if len(found) > 1]


# ``row_updates: auto`` goes sparse when the rating tables hold more rows than this many per batch row: dense
# AdamW's step grows with the tables, the sparse update's does not, and they cross near 18,000 rows at batch
# 1024 (``bench/bench_trainer.py --row-updates sparse dense``).
SPARSE_ROWS_PER_BATCH_ROW = 16


def uses_sparse_updates(model: CFModule, cfg: TrainConfig) -> bool:
    """Whether ``cfg.row_updates`` (``auto``: by the tables' size against the batch) picks :class:`SparseAdamW`."""
    if cfg.row_updates != "auto":
        return cfg.row_updates == "sparse"
    # The rating tables' rows: a hybrid's ranking head doubles them, and counting it sent MovieLens small's
    # hybrid sparse, whose lazy moments cost its ratings 0.0018 MSE against the rating model's.
    rows = model.args.n_users + model.args.n_items
    return rows > SPARSE_ROWS_PER_BATCH_ROW * cfg.batch_size


def l2_penalty(model: CFModule, users: torch.Tensor, items: torch.Tensor, wd: float,
               bias_wd: float = 0.0) -> torch.Tensor:
    """Mean squared norm of the embedding rows this batch uses, times ``wd``
    (``bias_wd`` for the bias embeddings)."""
    total = users.new_zeros((), dtype=torch.float32)
    for side, is_bias, table in model.embeddings():
        factor = bias_wd if is_bias else wd
        if factor:
            total = total + factor * table(users if side == "user" else items).pow(2).sum(1).mean()
    return total


def make_scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """A per-step learning-rate schedule and the number of steps it spans."""
    total = cfg.total_epochs() * steps_per_epoch
    if cfg.schedule == "sgdr":
        sched = torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(
            opt, T_0=cfg.cycle_len * steps_per_epoch, T_mult=cfg.cycle_mult, eta_min=cfg.lr / 100)
    elif cfg.schedule == "one_cycle":
        # Each group peaks at its own rate (a hybrid's ranking head may have its own, train.rank_lr).
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=[g["lr"] for g in opt.param_groups],
                                                    total_steps=total, pct_start=0.25)
    else:
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
    return sched, total


def optimizer_record(cfg: TrainConfig, opt: torch.optim.Optimizer, steps_per_epoch: int, steps_run: int,
                     segments: int = 64) -> Optional[Dict[str, Any]]:
    """What the optimiser did to the weights a model exports, for folding in new rows the same way
    (:mod:`cfmodel.model.fold_in_adam`): the first ``steps_run`` steps of the run's schedule cut into at most
    ``segments`` pieces, each (steps, Σ lr, Σ log(1 − lr·wd), the same for the biases' decay; both as
    :func:`step_decays` gives them), with
    ``opt``'s constants, the batch size and whether moments were lazy (:class:`SparseAdamW`). None for
    ``wd_mode: l2``, whose coupled penalty the record does not describe."""
    if cfg.wd_mode != "adamw" or steps_run < 1:
        return None
    probe = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched, total = make_scheduler(probe, cfg, steps_per_epoch)
    lrs = []
    for step in range(steps_run):  # as the trainer: the step's lr, then the schedule moves on
        lrs.append(probe.param_groups[0]["lr"])
        if step < total:
            probe.step()
            sched.step()
    lrs = np.asarray(lrs, np.float64)
    decays = step_decays(cfg, steps_per_epoch)
    cuts = np.unique(np.linspace(0, steps_run, min(segments, steps_run) + 1).astype(int))
    pieces = [[int(b - a), float(lrs[a:b].sum()), float(np.log1p(-lrs[a:b] * decays.wd).sum()),
               float(np.log1p(-lrs[a:b] * decays.bias_wd).sum())] for a, b in zip(cuts[:-1], cuts[1:])]
    return {"batch_size": cfg.batch_size, "steps_per_epoch": steps_per_epoch,
            "betas": [float(b) for b in opt.defaults["betas"]], "eps": float(opt.defaults["eps"]),
            "lazy": isinstance(opt, SparseAdamW), "segments": pieces}

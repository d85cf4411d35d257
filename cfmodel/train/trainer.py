"""The training loop: Adam with weight decay, SGDR or one-cycle learning rates.

One readable loop (:meth:`Trainer.fit`) that fails fast on a NaN or infinite loss,
evaluates validation MSE each epoch, keeps the best-by-validation weights, and
checkpoints weights, optimiser, scheduler, history, config and id maps together
so that ``resume`` continues to the same result as an uninterrupted run.

Randomness is reseeded from ``(seed, epoch)`` at the start of every epoch
(shuffling and dropout alike), so a resumed run needs no saved RNG state.

In a data-parallel run (:mod:`cfmodel.train.distributed`) every process runs
this same loop on its own shard, with the model wrapped in
``DistributedDataParallel``; :class:`~cfmodel.train.ranks.Ranks` keeps the
processes on the same step and lets rank 0 alone write.
"""
from __future__ import annotations

import csv
import json
import logging
import math
import os
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from typing import Any, Dict, List, Optional

import torch
from torch import nn
from tqdm import tqdm

from cfmodel.config import TrainConfig
from cfmodel.errors import CfError
from cfmodel.train.objectives import Rating
from cfmodel.train.optim import l2_penalty, make_optimizer, make_scheduler, step_decays
from cfmodel.train.rank_checks import RankChecks
from cfmodel.train.ranks import SINGLE, Ranks
from cfmodel.train.sparse_adamw import settle
from cfmodel.train.sparse_hook import data_parallel
from cfmodel.train.validation import validate

LOG = logging.getLogger(__name__)


class TrainingDivergedError(CfError):
    """The loss became NaN or infinite (lower the learning rate)."""

    exit_code = 4


@dataclass
class EpochMetrics:
    """What one epoch measured. The MSE columns are NaN for objectives that do not predict ratings;
    ``valid_loss`` is the objective's loss on the validation split (:meth:`Trainer._criterion` picks
    the best epoch)."""

    epoch: int
    train_mse: float
    valid_mse: float
    valid_rmse: float
    lr: float
    seconds: float
    ratings_per_s: float
    train_loss: float = math.nan
    valid_loss: float = math.nan

    def to_json(self) -> Dict[str, Any]:
        """As a JSON object: NaN (no MSE for a ranking objective) is not JSON, so null."""
        return {k: None if isinstance(v, float) and math.isnan(v) else v for k, v in asdict(self).items()}


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when a GPU is visible, else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise CfError(f"train.device={name} but no CUDA device is available")
    return torch.device(name)


class LossModule(nn.Module):
    """The objective's loss on a model, as one module: what ``DistributedDataParallel`` wraps, so that its
    gradient hooks see every parameter the objective uses, whichever of the model's methods it calls."""

    def __init__(self, model: nn.Module, objective: Any) -> None:
        super().__init__()
        self.model = model
        self.objective = objective

    def forward(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor):
        return self.objective.loss(self.model, users, items, ratings)


class Trainer:
    """Fit a model on a train loader, validating and checkpointing each epoch.

    Parameters
    ----------
    model
        Any module mapping (users, items) to ratings.
    train, valid
        Loaders with ``epoch(n)`` and ``steps_per_epoch()``.
    cfg
        The ``train`` config section.
    out_dir
        Where ``last.pt``, ``best.pt``, ``metrics.json`` and ``metrics.csv`` go (local).
    extra
        Saved in every checkpoint as is (id maps, data fingerprint).
    ranks
        This process's place in a data-parallel run (the loaders already read its shard).
    """

    def __init__(self, model: nn.Module, train: Any, valid: Any, cfg: TrainConfig, out_dir: str,
                 device: Optional[torch.device] = None, extra: Optional[Dict[str, Any]] = None,
                 objective: Any = None, ranks: Ranks = SINGLE) -> None:
        self.cfg = cfg
        self.objective = objective or Rating()
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.train, self.valid = train, valid
        self.out_dir = out_dir
        self.extra = extra or {}
        self.ranks = ranks
        self.checks = RankChecks(ranks)
        self.steps_per_epoch = train.steps_per_epoch()
        if ranks.world > 1:
            # DDP waits for a gradient of every trainable weight (and a sparse one must be defined): freeze
            # the ones this objective never reaches. One process skips them alike (they never get a gradient).
            for p in self.objective.unused_parameters(self.model):
                p.requires_grad_(False)
        # Before DDP: it reads which tables give sparse gradients. One process only shares a side's rows: DDP
        # registers each weight apart.
        self.opt = make_optimizer(self.model, cfg, merge_rows=ranks.world == 1, steps_per_epoch=self.steps_per_epoch)
        self.decays = step_decays(cfg, self.steps_per_epoch)  # what make_optimizer gave the groups
        if self.decays.scale < 1:
            LOG.info("weight decay a step: wd %.4g (%s x %d/%d, train.wd_epoch_steps of the epoch's steps)",
                     self.decays.wd, cfg.weight_decay, cfg.wd_epoch_steps, self.steps_per_epoch)
        self.loss_fn = LossModule(self.model, self.objective)
        if ranks.world > 1:
            self.loss_fn = data_parallel(self.loss_fn)
        self.sched, self.total_steps = make_scheduler(self.opt, cfg, self.steps_per_epoch)
        self.step = 0
        self.epoch = 0
        self.history: List[EpochMetrics] = []
        self.best_valid = math.inf
        self.stale_epochs = 0
        self.resumed_after: Optional[int] = None  # the epoch a resumed fit continued after
        os.makedirs(out_dir, exist_ok=True)

    # -- checkpoints ---------------------------------------------------------
    def state(self) -> Dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.opt.state_dict(),
                "scheduler": self.sched.state_dict(), "epoch": self.epoch, "step": self.step,
                "best_valid": self.best_valid, "stale_epochs": self.stale_epochs,
                "history": [asdict(m) for m in self.history], "config": asdict(self.cfg), **self.extra}

    def save(self, name: str) -> None:
        """Write a checkpoint (rank 0 alone: every rank holds the same weights)."""
        if not self.ranks.is_main:
            return
        path = os.path.join(self.out_dir, name)
        with open(path + ".tmp", "wb") as fh:  # a Python file: a full disk then raises OSError(ENOSPC)
            torch.save(self.state(), fh)
        os.replace(path + ".tmp", path)  # never a torn checkpoint

    def resume_from(self, path: str) -> bool:
        """Load ``path`` if rank 0 sees it, handing rank 0's copy to every rank; whether there was one."""
        state = None
        if self.ranks.is_main and os.path.exists(path):
            state = torch.load(path, map_location="cpu", weights_only=True)
        state = self.ranks.broadcast(state)
        if state is not None:
            self.load(state)
            LOG.info("resumed from %s after epoch %d", path, self.epoch)
        return state is not None

    def load(self, state: Dict[str, Any]) -> None:
        """Restore a checkpoint's state, as :meth:`save` wrote and ``torch.load(weights_only=True)`` reads it."""
        self.model.load_state_dict(state["model"])
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.epoch, self.step = state["epoch"], state["step"]
        self.best_valid, self.stale_epochs = state["best_valid"], state["stale_epochs"]
        self.history = [EpochMetrics(**m) for m in state["history"]]

    def _write_metrics(self) -> None:
        rows = [asdict(m) for m in self.history]
        with open(os.path.join(self.out_dir, "metrics.json"), "w", encoding="utf-8") as fh:
            json.dump([m.to_json() for m in self.history], fh, indent=2)
        with open(os.path.join(self.out_dir, "metrics.csv"), "w", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(EpochMetrics.__dataclass_fields__))
            writer.writeheader()
            writer.writerows(rows)

    # -- the loop ------------------------------------------------------------
    def fit(self, resume: bool = False) -> List[EpochMetrics]:
        """Train for the schedule's epochs (continuing after ``last.pt`` with ``resume``)."""
        if resume and self.resume_from(os.path.join(self.out_dir, "last.pt")):
            self.resumed_after = self.epoch
        if resume:
            self.checks.check("resume", self.epoch, self.step, self.model, self.opt)
        for epoch in range(self.epoch + 1, self.cfg.total_epochs() + 1):
            if self.cfg.early_stopping and self.stale_epochs >= self.cfg.early_stopping:
                LOG.info("early stopping: no validation gain in %d epochs", self.stale_epochs)
                break
            started = time.perf_counter()
            train_loss, train_mse, n = self._train_epoch(epoch)
            seconds = time.perf_counter() - started
            settle(self.opt)  # every row pays the decay it owes before the weights are validated and saved
            self.checks.check(f"epoch {epoch}", epoch, self.step, self.model, self.opt)
            valid_loss, valid_mse = validate(self.model, self.objective, self.valid, self.device, self.ranks)
            self._end_epoch(EpochMetrics(epoch, train_mse, valid_mse, math.sqrt(valid_mse),
                                         self.opt.param_groups[0]["lr"], seconds, n / seconds, train_loss,
                                         valid_loss))
        return self.history

    def _batches(self, epoch: int):
        """The epoch's batches of this rank's shard. With several ranks every rank takes the same number of
        steps (each step's gradient all-reduce needs them all): while any shard has rows left, a shard that
        ran out starts over in a new order, so no row is dropped and a few are seen twice."""
        if self.ranks.world == 1:
            yield from self.train.epoch(epoch)
            return
        batches, first_pass, restarts = iter(self.train.epoch(epoch)), True, 0
        while True:
            batch = next(batches, None)
            first_pass = first_pass and batch is not None
            if not self.ranks.any(first_pass):  # every shard has been read once
                return
            if batch is None:
                restarts += 1
                batches = iter(self.train.epoch(epoch + 100_003 * restarts))
                batch = next(batches)
            elif first_pass:
                self.checks.read(batch[0], batch[1])
            yield batch

    def _train_epoch(self, epoch: int) -> tuple:
        """One pass over the training loader; returns (mean loss, mean training MSE or NaN, rows seen)."""
        autocast = (torch.autocast(device_type="cuda", dtype=torch.bfloat16)
                    if self.cfg.amp and self.device.type == "cuda" else nullcontext())
        # Each rank its own dropout masks and negatives; rank 0's are a single process's.
        seed = self.cfg.seed * 1000 + epoch + 7919 * self.ranks.rank
        torch.manual_seed(seed)
        self.objective.reseed(seed)
        self.model.train()
        sq, total, n = 0.0, 0.0, 0
        bar = tqdm(self._batches(epoch), total=self.steps_per_epoch, desc=f"epoch {epoch}",
                   disable=not (self.cfg.show_progress and self.ranks.is_main), leave=False)
        for i, (users, items, ratings) in enumerate(bar, start=1):
            users, items = users.to(self.device), items.to(self.device)
            ratings = ratings.to(self.device)
            with autocast:
                loss, mse = self.loss_fn(users, items, ratings)
            if self.cfg.wd_mode == "l2":
                loss = loss + l2_penalty(self.model, users, items, self.cfg.weight_decay, self.cfg.bias_wd)
            if not torch.isfinite(loss):
                raise TrainingDivergedError(
                    f"loss is {float(loss.detach())} at epoch {epoch}, step {i}: lower train.lr (now {self.cfg.lr})")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.step < self.total_steps:
                self.sched.step()
            self.step += 1
            sq += float(mse.detach()) * len(ratings) if mse is not None else math.nan
            total += float(loss.detach()) * len(ratings)
            n += len(ratings)
            if i % 50 == 0:
                bar.set_postfix(loss=f"{total / n:.4f}")
        total, sq, n = self.ranks.sum([total, sq, n])
        return total / max(n, 1), sq / max(n, 1), int(n)

    def _criterion(self, metrics: EpochMetrics) -> float:
        """What picks the best epoch: validation MSE for objectives that predict ratings; for ranking-only
        objectives the latest epoch (a sampled validation loss does not follow list quality: a softmax
        model's lowest-loss epoch can make worse lists than its last)."""
        return metrics.valid_mse if self.objective.predicts_ratings else -float(metrics.epoch)

    def _end_epoch(self, metrics: EpochMetrics) -> None:
        """Record an epoch, keep the best weights, checkpoint."""
        self.history.append(metrics)
        self.epoch = metrics.epoch
        LOG.info("epoch %d: train loss %.4f, valid loss %.4f, valid mse %.4f (rmse %.4f), %.0f ratings/s",
                 metrics.epoch, metrics.train_loss, metrics.valid_loss, metrics.valid_mse, metrics.valid_rmse,
                 metrics.ratings_per_s)
        if self._criterion(metrics) < self.best_valid:
            self.best_valid, self.stale_epochs = self._criterion(metrics), 0
            self.save("best.pt")
        else:
            self.stale_epochs += 1
        self.save("last.pt")
        if self.ranks.is_main:
            self._write_metrics()

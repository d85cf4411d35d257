"""The learning-rate finder (the lesson's ``lr_find``).

Trains on successive batches while the learning rate grows exponentially from
``start`` to ``end``, records the smoothed loss, stops once the loss blows up,
and suggests the rate at the smoothed minimum divided by 10. The model's
weights are restored afterwards.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any, Iterator, List, Tuple

import torch
from torch import nn

from cfmodel.config import TrainConfig
from cfmodel.errors import InputError
from cfmodel.train.objectives import Rating
from cfmodel.train.optim import l2_penalty, make_optimizer


def _endless(loader: Any) -> Iterator[Tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Batches from successive epochs, until an epoch yields nothing."""
    epoch = 0
    while True:
        empty = True
        for batch in loader.epoch(epoch):
            empty = False
            yield batch
        if empty:
            return
        epoch += 1


@dataclass
class LRFinding:
    """The sweep's learning rates, smoothed losses and the suggested rate."""

    lrs: List[float]
    losses: List[float]
    suggestion: float


def lr_find(model: nn.Module, loader: Any, cfg: TrainConfig, device: torch.device, start: float = 1e-6,
            end: float = 1.0, steps: int = 200, beta: float = 0.98, objective: Any = None) -> LRFinding:
    """Sweep learning rates over ``steps`` batches of the objective's loss (MSE by default); ``model`` is
    left as it was."""
    objective = objective or Rating()
    saved = copy.deepcopy(model.state_dict())
    opt = make_optimizer(model, cfg, steps_per_epoch=loader.steps_per_epoch())
    model.train()
    lrs: List[float] = []
    losses: List[float] = []
    avg, best = 0.0, math.inf
    torch.manual_seed(cfg.seed)
    for step, (users, items, ratings) in zip(range(steps), _endless(loader)):
        lr = start * (end / start) ** (step / max(steps - 1, 1))
        for group in opt.param_groups:
            group["lr"] = lr
        users, items, ratings = users.to(device), items.to(device), ratings.to(device)
        loss, _ = objective.loss(model, users, items, ratings)
        if cfg.wd_mode == "l2":
            loss = loss + l2_penalty(model, users, items, cfg.weight_decay, cfg.bias_wd)
        value = float(loss.detach())
        if not math.isfinite(value):
            break
        avg = beta * avg + (1 - beta) * value
        smoothed = avg / (1 - beta ** (step + 1))
        lrs.append(lr)
        losses.append(smoothed)
        best = min(best, smoothed)
        if smoothed > 4 * best:
            break
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    model.load_state_dict(saved)
    if not losses:
        raise InputError("the learning-rate finder recorded no loss: the training split is empty or the loss was "
                         "not finite from the first batch")
    suggestion = lrs[min(range(len(losses)), key=losses.__getitem__)] / 10
    return LRFinding(lrs, losses, suggestion)


def plot_lr_find(finding: LRFinding, path: str) -> None:
    """Loss against learning rate (log scale), the suggestion marked, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(finding.lrs, finding.losses)
    ax.axvline(finding.suggestion, color="tab:red", linestyle="--", label=f"suggested lr {finding.suggestion:.2e}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("smoothed training loss")
    ax.set_title("Learning-rate finder")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)

"""Fitting a model and publishing it: the single-process trainer's whole run, which the train stage calls
in its own process and each data-parallel rank (:mod:`cfmodel.train.distributed`) and tune trial call in
theirs. Checkpoints live in ``<output>.checkpoints/`` while it trains; the output is published atomically.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import time
from typing import Any, Dict, Optional

import torch

import cfmodel
from cfmodel.config import TrainConfig
from cfmodel.config.train import LESSON_Y_RANGE, for_data
from cfmodel.model import ModelArgs, TrainedModel
from cfmodel.model.factors import ids_payload, read_id_map
from cfmodel.storage import LocalStorage, atomic_output
from cfmodel.dataset import PreparedData
from cfmodel.lease import lease
from cfmodel.train.loaders import make_loaders
from cfmodel.train.negatives import NegativeSampler, RatedPairs
from cfmodel.train.objectives import make_objective
from cfmodel.train.optim import optimizer_record
from cfmodel.train.ranks import SINGLE, Ranks
from cfmodel.train.sparse_adamw import SparseAdamW
from cfmodel.train.trainer import Trainer, resolve_device
from cfmodel.urls import to_url

LOG = logging.getLogger(__name__)


def checkpoint_dir(out: str) -> str:
    """Where checkpoints live while training: beside the output, so a crash keeps them."""
    return out.rstrip("/") + ".checkpoints"


def model_args(cfg: TrainConfig, n_users: int, n_items: int) -> ModelArgs:
    """The ``train`` section's architecture for data of this size (a ranking head for ``hybrid``); a
    section not yet resolved for its data (:func:`cfmodel.config.train.for_data`) gets the lesson's y_range."""
    return ModelArgs(cfg.model, n_users, n_items, cfg.n_factors, list(cfg.y_range or LESSON_Y_RANGE),
                     list(cfg.hidden), list(cfg.dropouts), cfg.emb_dropout,
                     rank_factors=cfg.rank_factors if cfg.spec.ranking_head else None)


def objective_for(cfg: TrainConfig, data: PreparedData):
    """The ``train`` section's objective; the ranking ones read the training split's pairs once (for
    the negatives: which items each user rated, and how often each item was rated)."""
    sampler = None
    if cfg.spec.ranking_term is not None:
        rated = RatedPairs.from_parquet(to_url(data.part("train")), data.n_items)
        sampler = NegativeSampler(rated, cfg.sampling_method, cfg.exclude_rated, cfg.seed)
    return make_objective(cfg.spec, sampler, cfg.negatives, cfg.samples, cfg.positive_threshold,
                          cfg.ranking_weight, cfg.hybrid_ranking, cfg.confidence)


def setup(cfg: TrainConfig, ranks: Ranks = SINGLE):
    """(prepared data, train loader, valid loader, loader kind, device, model) for a fit of ``cfg``."""
    data = PreparedData(cfg.data)
    cur_shard, shard_count = ranks.shard if ranks.world > 1 else (cfg.cur_shard, cfg.shard_count)
    train, valid, kind = make_loaders(data, cfg.batch_size, cfg.loader, cfg.memory_max_rows, cfg.seed,
                                      cfg.shuffle_buffer, cfg.reader_workers, cur_shard, shard_count,
                                      shard_valid=ranks.world > 1)
    device = resolve_device(cfg.device)
    if kind == "memory" and device.type == "cuda":
        # A split small enough for host memory is small for a GPU's: gathering batches there spares the
        # per-step copies (bench/bench_trainer.py --resident measures the difference).
        train.to(device), valid.to(device)
    torch.manual_seed(cfg.seed)  # every rank starts from the same weights (DDP checks it)
    model = model_args(cfg, data.n_users, data.n_items).build().to(device)
    LOG.info("training %s on %s with the %s loader: %d train rows, %d users, %d items", cfg.model, device, kind,
             data.counts["train_rows"], data.n_users, data.n_items)
    return data, train, valid, kind, device, model


def _resume_point(out: str, ckpt: str, resume: bool) -> None:
    """Make ``ckpt`` hold the checkpoints to continue from, or nothing for a fresh start."""
    if not resume:
        shutil.rmtree(ckpt, ignore_errors=True)
    elif not os.path.exists(os.path.join(ckpt, "last.pt")) and os.path.exists(os.path.join(out, "checkpoints")):
        # Continuing a finished output (more epochs): start from the checkpoints it published.
        shutil.copytree(os.path.join(out, "checkpoints"), ckpt, dirs_exist_ok=True)


def fit_and_publish(cfg: TrainConfig, resume: bool, ranks: Ranks = SINGLE) -> Optional[Dict[str, Any]]:
    """Fit on this rank's shard; rank 0 then publishes the output and returns the result (others: None).

    Rank 0 holds the output's lease (:mod:`cfmodel.lease`) from the first checkpoint to the publish: a second
    live attempt of the same train stage would otherwise write into the same checkpoints."""
    if not ranks.is_main:
        return _fit(cfg, resume, ranks)
    with lease(LocalStorage(), cfg.output):
        return _fit(cfg, resume, ranks)


def _fit(cfg: TrainConfig, resume: bool, ranks: Ranks) -> Optional[Dict[str, Any]]:
    started = time.time()
    cfg = for_data(cfg, PreparedData(cfg.data).meta)
    out, ckpt = cfg.output.rstrip("/"), checkpoint_dir(cfg.output)
    data, train, valid, kind, device, model = setup(cfg, ranks)
    user_ids = read_id_map(data.part("users"), "user_id", "user_idx")
    item_ids = read_id_map(data.part("items"), "item_id", "item_idx")
    data_fingerprint = {"prepared": cfg.data, "input_sha256": data.input_sha256}
    if ranks.is_main:
        _resume_point(out, ckpt, resume)
    objective = objective_for(cfg, data)
    trainer = Trainer(model, train, valid, cfg, ckpt, device,
                      extra={"user_ids": ids_payload(user_ids), "item_ids": ids_payload(item_ids),
                             "data": data_fingerprint}, objective=objective, ranks=ranks)
    fit_started = time.time()
    history = trainer.fit(resume=resume)
    if not ranks.is_main:
        return None
    resumed_after = trainer.resumed_after
    fit_seconds = time.time() - fit_started

    best = torch.load(os.path.join(ckpt, "best.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    rates = objective.predicts_ratings
    # The epoch best.pt holds, as the trainer chose it: one rule, in Trainer._criterion.
    best_epoch = next(m for m in history if m.epoch == best["epoch"])
    trained = TrainedModel(model.args, model.cpu().eval(), user_ids, item_ids,
                           {"valid_mse": best_epoch.valid_mse if rates else None, "data": data_fingerprint,
                            "objective": cfg.objective,
                            # How the optimiser moved the exported weights: fold-in moves new rows alike.
                            "optimizer": optimizer_record(cfg, trainer.opt, trainer.steps_per_epoch,
                                                          best_epoch.epoch * trainer.steps_per_epoch)})
    result = {"stage": "train", "model": cfg.model, "objective": cfg.objective, "device": str(device),
              "loader": kind, "row_updates": "sparse" if isinstance(trainer.opt, SparseAdamW) else "dense",
              # The decay a step paid (train.wd_epoch_steps scales it on large splits).
              "wd_per_step": round(trainer.decays.wd, 8),
              "best_epoch": best_epoch.epoch, "valid_loss": round(best_epoch.valid_loss, 5),
              "valid_mse": round(best_epoch.valid_mse, 5) if rates else None,
              "valid_rmse": round(best_epoch.valid_rmse, 5) if rates else None, "epochs": len(history),
              "resumed_after_epoch": resumed_after, "model_version": trained.version,
              "ratings_per_s": round(sum(m.ratings_per_s for m in history) / len(history)),
              "fit_seconds": round(fit_seconds, 2), "seconds": round(time.time() - started, 2),
              "processes": ranks.world if cfg.distributed.processes else 0}
    with atomic_output(LocalStorage(), out, overwrite=True) as tmp:
        os.makedirs(tmp)
        trained.save(tmp)
        shutil.copytree(ckpt, os.path.join(tmp, "checkpoints"))
        for name in ("metrics.json", "metrics.csv"):
            shutil.copy(os.path.join(ckpt, name), os.path.join(tmp, name))
        _write_meta(tmp, cfg, data.meta, result, trained, history, trainer.checks.records)
    shutil.rmtree(ckpt, ignore_errors=True)
    LOG.info("train result: %s", json.dumps(result, sort_keys=True))
    return result


def _write_meta(out: str, cfg: TrainConfig, meta: dict, result: dict, trained: TrainedModel, history,
                rank_checks: list) -> None:
    meta_out = {**result, "n_users": meta["n_users"], "n_items": meta["n_items"], "data": trained.extra["data"],
                "prepared_meta": {k: meta.get(k) for k in ("counts", "split", "rating", "input", "feedback")},
                "model_args": trained.args.to_dict(), "history": [m.to_json() for m in history],
                "config": vars(cfg), "versions": {"cfmodel": cfmodel.__version__, "torch": torch.__version__,
                                                  "python": platform.python_version()}}
    if rank_checks:  # what each rank of a data-parallel run read and held (cfmodel.train.rank_checks)
        meta_out["rank_checks"] = rank_checks
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta_out, fh, indent=2, sort_keys=True, default=str)

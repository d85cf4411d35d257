"""Train job: fit a collaborative-filtering model on the prepare job's Parquet.

A driver-side (or GPU-node) step, not a Spark job: it streams ``train/`` and
``valid/`` through Petastorm (or holds them in memory when they fit), trains on
CUDA when there is a GPU and on the CPU otherwise, and exports factors::

    .venv/bin/cf-train --conf conf/local.yaml
    .venv/bin/cf-train --conf conf/local.yaml --resume          # continue after an interruption
    .venv/bin/cf-train --conf conf/local.yaml --lr-find         # write lr_find.png, suggest a rate

Outputs under ``train.output`` (a local directory): ``checkpoints/last.pt`` and
``best.pt``, ``metrics.json`` and ``metrics.csv`` (per epoch), ``user_factors/``,
``item_factors/``, ``model.pt``, ``meta.json`` and ``_SUCCESS``. Exit code 0 on
success, 2 for bad input or config, 4 when the loss diverges.
"""
from __future__ import annotations

import json
import logging
import os
import platform
import shutil
import sys
import time
from typing import Any, Dict, List, Optional, Sequence

import torch

import cfmodel
from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import TrainConfig
from cfmodel.data import make_loaders, read_prepared_meta
from cfmodel.errors import OutputExistsError
from cfmodel.export import export_factors, model_payload, read_id_map
from cfmodel.lr_find import lr_find, plot_lr_find
from cfmodel.models import build_model
from cfmodel.train import Trainer, resolve_device

LOG = logging.getLogger("cfmodel.jobs.train")


def _prepare_output(out: str, overwrite: bool, keep: bool) -> None:
    if os.path.exists(out) and not (overwrite or keep):
        raise OutputExistsError(f"output already exists: {out} (pass --overwrite to replace it or --resume)")
    if os.path.exists(out) and overwrite and not keep:
        shutil.rmtree(out)
    os.makedirs(out, exist_ok=True)


def _setup(cfg: TrainConfig):
    meta = read_prepared_meta(cfg.data)
    train, valid, kind = make_loaders(cfg.data, meta, cfg.batch_size, cfg.loader, cfg.memory_max_rows, cfg.seed,
                                      cfg.shuffle_buffer, cfg.reader_workers, cfg.cur_shard, cfg.shard_count)
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = build_model(cfg.model, meta["n_users"], meta["n_items"], cfg.n_factors, tuple(cfg.y_range),
                        cfg.hidden, cfg.dropouts, cfg.emb_dropout).to(device)
    LOG.info("training %s on %s with the %s loader: %d train rows, %d users, %d items", cfg.model, device, kind,
             meta["counts"]["train_rows"], meta["n_users"], meta["n_items"])
    return meta, train, valid, kind, device, model


def run(cfg: TrainConfig, overwrite: bool, resume: bool = False) -> Dict[str, Any]:
    """The train stage: fit, export factors and ``model.pt``; returns the result (also in ``meta.json``).

    A finished output (``_SUCCESS``) is replaced only with ``overwrite``; an
    unfinished one is continued from its last checkpoint with ``resume``.
    """
    out = cfg.output
    _prepare_output(out, overwrite, resume)
    if os.path.exists(os.path.join(out, "_SUCCESS")):
        os.remove(os.path.join(out, "_SUCCESS"))
    started = time.time()
    meta, train, valid, kind, device, model = _setup(cfg)
    model_args = {"name": cfg.model, "n_factors": cfg.n_factors, "y_range": list(cfg.y_range),
                  "hidden": list(cfg.hidden), "dropouts": list(cfg.dropouts), "emb_dropout": cfg.emb_dropout}
    user_ids = read_id_map(f"{cfg.data.rstrip('/')}/users", "user_id", "user_idx")
    item_ids = read_id_map(f"{cfg.data.rstrip('/')}/items", "item_id", "item_idx")
    data_fingerprint = {"prepared": cfg.data, "input_sha256": meta["input"]["sha256"]}
    trainer = Trainer(model, train, valid, cfg, os.path.join(out, "checkpoints"), device,
                      extra={"user_ids": torch.from_numpy(user_ids), "item_ids": torch.from_numpy(item_ids),
                             "data": data_fingerprint})
    fit_started = time.time()
    history = trainer.fit(resume=resume)
    fit_seconds = time.time() - fit_started

    best = torch.load(os.path.join(out, "checkpoints", "best.pt"), map_location="cpu", weights_only=True)
    model.load_state_dict(best["model"])
    model.cpu()
    best_epoch = min(history, key=lambda m: m.valid_mse)
    export_factors(model, user_ids, item_ids, out)
    torch.save(model_payload(model, model_args, user_ids, item_ids,
                             {"valid_mse": best_epoch.valid_mse, "data": data_fingerprint}),
               os.path.join(out, "model.pt"))
    for name in ("metrics.json", "metrics.csv"):
        shutil.copy(os.path.join(out, "checkpoints", name), os.path.join(out, name))
    result = {"stage": "train", "model": cfg.model, "device": str(device), "loader": kind,
              "best_epoch": best_epoch.epoch, "valid_mse": round(best_epoch.valid_mse, 5),
              "valid_rmse": round(best_epoch.valid_rmse, 5), "epochs": len(history),
              "ratings_per_s": round(sum(m.ratings_per_s for m in history) / len(history)),
              "fit_seconds": round(fit_seconds, 2), "seconds": round(time.time() - started, 2)}
    meta_out = {**result, "n_users": meta["n_users"], "n_items": meta["n_items"], "data": data_fingerprint,
                "prepared_meta": {k: meta[k] for k in ("counts", "split", "rating", "input")},
                "model_args": model_args, "history": [vars(m) for m in history],
                "config": vars(cfg), "versions": {"cfmodel": cfmodel.__version__, "torch": torch.__version__,
                                                  "python": platform.python_version()}}
    with open(os.path.join(out, "meta.json"), "w", encoding="utf-8") as fh:
        json.dump(meta_out, fh, indent=2, sort_keys=True, default=str)
    open(os.path.join(out, "_SUCCESS"), "w").close()
    LOG.info("train result: %s", json.dumps(result, sort_keys=True))
    return result


def _run(argv: List[str]) -> int:
    parser = job_parser("Train a collaborative-filtering model on prepared Parquet.")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--lr-find", action="store_true", help="run the learning-rate finder instead of training")
    args = parser.parse_args(argv)
    cfg = start_job(args).train
    if not args.lr_find:
        print(json.dumps(run(cfg, args.overwrite, args.resume), indent=2, sort_keys=True))
        return 0
    out = cfg.output
    _prepare_output(out, args.overwrite, keep=True)
    _, train, _, _, device, model = _setup(cfg)
    finding = lr_find(model, train, cfg, device, cfg.lr_find_start, cfg.lr_find_end, cfg.lr_find_steps)
    plot_lr_find(finding, os.path.join(out, "lr_find.png"))
    with open(os.path.join(out, "lr_find.json"), "w", encoding="utf-8") as fh:
        json.dump({"lrs": finding.lrs, "losses": finding.losses, "suggestion": finding.suggestion}, fh)
    print(f"suggested learning rate: {finding.suggestion:.3g} (plot: {os.path.join(out, 'lr_find.png')})")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for the ``cf-train`` console script."""
    return run_main(_run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""The train stage (``cf-train``): fit a model on the prepare stage's Parquet.

A driver-side (or GPU-node) step, not a Spark job: it streams ``train/`` and
``valid/`` through Petastorm (or holds them in memory when they fit), trains on
CUDA when there is a GPU and on the CPU otherwise, and exports the model::

    cf-train --conf conf/local.yaml
    cf-train --conf conf/local.yaml --resume          # continue after an interruption
    cf-train --conf conf/local.yaml --lr-find         # write lr_find.png, suggest a rate

Outputs under ``train.output`` (a local directory, published atomically like
every stage's): ``model.pt``, ``user_factors/``, ``item_factors/``,
``metrics.json`` and ``metrics.csv`` (per epoch), ``checkpoints/``,
``meta.json`` and ``_SUCCESS``. While training, checkpoints go to
``<output>.checkpoints/``, which outlives a crash so that ``--resume`` (and a
rerun of the pipeline) continues from the last finished epoch; it is removed
once the output is published. Exit code 0 on success, 2 for bad input or
config, 4 when the loss diverges.
"""
from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict, List, Optional, Sequence

from cfmodel.cli import job_parser, run_main, start_job
from cfmodel.config import TrainConfig
from cfmodel.config.train import for_data
from cfmodel.config.tuned import tuned_config
from cfmodel.errors import OutputExistsError
from cfmodel.train.fit import fit_and_publish, objective_for, setup
from cfmodel.dataset import PreparedData
from cfmodel.train.lr_find import lr_find, plot_lr_find

LOG = logging.getLogger(__name__)


def run(cfg: TrainConfig, overwrite: bool, resume: bool = False, spark: Any = None) -> Dict[str, Any]:
    """The train stage: fit, then publish ``model.pt``, factors and metrics; returns the result.

    A finished output is replaced only with ``overwrite`` or ``resume``;
    ``resume`` continues from the last checkpoint when there is one. With
    ``train.tuned`` the tune stage's chosen settings replace the section's
    (:mod:`cfmodel.config.tuned`); with ``train.distributed.processes`` the fit runs
    data-parallel through TorchDistributor on ``spark`` (:mod:`cfmodel.train.distributed`).
    """
    out = cfg.output.rstrip("/")
    if os.path.exists(out) and not (overwrite or resume):
        raise OutputExistsError(f"output already exists: {out} (pass --overwrite to replace it or --resume)")
    cfg = for_data(tuned_config(cfg), PreparedData(cfg.data).meta)
    if cfg.distributed.processes:
        from cfmodel.train.distributed import run_distributed
        return run_distributed(cfg, resume, spark)
    return fit_and_publish(cfg, resume)


def find_lr(cfg: TrainConfig) -> float:
    """The learning-rate finder: writes ``lr_find.png`` and ``lr_find.json`` under the output; returns the suggestion."""
    out = cfg.output
    os.makedirs(out, exist_ok=True)
    cfg = for_data(cfg, PreparedData(cfg.data).meta)
    data, train, _, _, device, model = setup(cfg)
    finding = lr_find(model, train, cfg, device, cfg.lr_find_start, cfg.lr_find_end, cfg.lr_find_steps,
                      objective=objective_for(cfg, data))
    plot_lr_find(finding, os.path.join(out, "lr_find.png"))
    with open(os.path.join(out, "lr_find.json"), "w", encoding="utf-8") as fh:
        json.dump({"lrs": finding.lrs, "losses": finding.losses, "suggestion": finding.suggestion}, fh)
    return finding.suggestion


def _run(argv: List[str]) -> int:
    parser = job_parser("Train a collaborative-filtering model on prepared Parquet.")
    parser.add_argument("--resume", action="store_true", help="continue from the last checkpoint")
    parser.add_argument("--lr-find", action="store_true", help="run the learning-rate finder instead of training")
    args = parser.parse_args(argv)
    full = start_job(args)
    cfg = full.train
    if args.lr_find:
        suggestion = find_lr(cfg)
        print(f"suggested learning rate: {suggestion:.3g} (plot: {os.path.join(cfg.output, 'lr_find.png')})")
        return 0
    if cfg.distributed.processes:  # TorchDistributor places the processes through Spark
        from cfmodel.session import spark_session
        with spark_session(full.spark) as spark:
            result = run(cfg, args.overwrite, args.resume, spark)
    else:
        result = run(cfg, args.overwrite, args.resume)
    print(json.dumps(result, indent=2, sort_keys=True))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point for ``jobs/train.py`` and the ``cf-train`` console script."""
    return run_main(_run, argv)

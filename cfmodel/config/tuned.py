"""The tune stage's choice, ``best.json``, and how the train stage takes it up (``train.tuned``)."""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Dict

from cfmodel.config.train import TrainConfig
from cfmodel.errors import InputError
from cfmodel.urls import read_json_file

LOG = logging.getLogger(__name__)
BEST = "best.json"


def read_best(tuned: str) -> Dict[str, Any]:
    """``<tuned>/best.json`` (a local path or any URL pyarrow reads)."""
    try:
        return read_json_file(f"{tuned.rstrip('/')}/{BEST}")
    except FileNotFoundError as exc:
        raise InputError(f"train.tuned={tuned}: no {BEST}; is this a tune stage's output?") from exc


def tuned_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the settings the tune stage chose (``train.tuned``) in place of its own."""
    if not cfg.tuned:
        return cfg
    best = read_best(cfg.tuned)
    LOG.info("train.tuned: %s chose %s (%s %.5f)", cfg.tuned, best["params"], best["metric"], best["value"])
    return dataclasses.replace(cfg, **best["params"])

"""The tune stage's choice, ``best.json``, and how the train stage takes it up (``train.tuned``)."""
from __future__ import annotations

import dataclasses
import json
import logging
from typing import Any, Dict

from pyarrow import fs

from cfmodel.config import TrainConfig
from cfmodel.errors import InputError
from cfmodel.urls import to_url

LOG = logging.getLogger(__name__)
BEST = "best.json"


def read_best(tuned: str) -> Dict[str, Any]:
    """``<tuned>/best.json`` (a local path or any URL pyarrow reads)."""
    url = f"{to_url(tuned.rstrip('/'))}/{BEST}"
    filesystem, inner = fs.FileSystem.from_uri(url)
    try:
        with filesystem.open_input_stream(inner) as stream:
            return json.loads(stream.read().decode("utf-8"))
    except FileNotFoundError as exc:
        raise InputError(f"train.tuned={tuned}: no {BEST}; is this a tune stage's output?") from exc


def tuned_config(cfg: TrainConfig) -> TrainConfig:
    """``cfg`` with the settings the tune stage chose (``train.tuned``) in place of its own."""
    if not cfg.tuned:
        return cfg
    best = read_best(cfg.tuned)
    LOG.info("train.tuned: %s chose %s (%s %.5f)", cfg.tuned, best["params"], best["metric"], best["value"])
    return dataclasses.replace(cfg, **best["params"])

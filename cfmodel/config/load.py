"""The whole configuration and how it is read: YAML files layered in order, then ``--set`` overrides.

Every key must be a field of its section's dataclass: a misspelt key is an error that names it, never a
silently ignored setting; a value of the wrong type is an error naming the key. A key that was renamed is
read under its old name too, with a warning naming the new one (:data:`RENAMED`).
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import dacite
import yaml

from cfmodel.config.evaluate import EvaluateConfig
from cfmodel.config.generate import GenerateConfig
from cfmodel.config.pipeline import PipelineConfig
from cfmodel.config.prepare import PrepareConfig
from cfmodel.config.score import ScoreConfig
from cfmodel.config.spark import SparkConfig
from cfmodel.config.train import TrainConfig
from cfmodel.config.tracking import TrackingConfig
from cfmodel.config.tune import TuneConfig
from cfmodel.errors import ConfigError

LOG = logging.getLogger(__name__)

# The keys a user sets: where the data is, what it looks like, how it is split and judged, what comes out.
# Every other key is advanced tuning or sizing (docs/configuration.md has both tables; `--help` lists these).
USER_KEYS = (
    "prepare.input", "prepare.output", "prepare.input_format", "prepare.user_col", "prepare.item_col",
    "prepare.rating_col", "prepare.timestamp_col", "prepare.feedback", "prepare.id_type", "prepare.weight_col",
    "prepare.rating_min", "prepare.rating_max", "prepare.rating_step", "prepare.split", "prepare.split_time",
    "prepare.valid_fraction", "prepare.seed",
    "train.data", "train.output", "train.objective", "train.confidence", "train.device", "train.amp",
    "train.distributed.processes",
    "score.model", "score.data", "score.output", "score.top_n", "score.users", "score.formats",
    "score.output_files", "score.ratings", "score.titles", "score.show_examples",
    "evaluate.model", "evaluate.data", "evaluate.output", "evaluate.k", "evaluate.relevance_threshold",
    "evaluate.baselines", "evaluate.titles", "evaluate.max_valid_rmse",
    "pipeline.output_root", "pipeline.stages", "pipeline.keep_runs", "spark.master", "spark.conf",
    "tracking.mlflow.uri", "tracking.mlflow.experiment", "tracking.mlflow.register_as",
)

# Keys renamed for clarity, old name -> new: the old one is still read, with a warning naming the new.
RENAMED = {
    "prepare.cold_start": "prepare.valid_cold_start",        # the validation split's policy, not ALS's
    "score.min_item_ratings": "score.min_candidate_ratings",  # not prepare.min_item_ratings (which drops rows)
    "evaluate.als_rank": "evaluate.als_n_factors",            # train.n_factors' name for the same idea
    "evaluate.implicit_als_ranks": "evaluate.implicit_als_n_factors",
}


@dataclass
class Config:
    """The whole configuration: one section per stage."""

    spark: SparkConfig = field(default_factory=SparkConfig)
    generate: GenerateConfig = field(default_factory=GenerateConfig)
    prepare: PrepareConfig = field(default_factory=PrepareConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    score: ScoreConfig = field(default_factory=ScoreConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


def _renamed(data: Dict[str, Any], source: str) -> None:
    """Move each old key of :data:`RENAMED` to its new name in place, warning; both at once is an error."""
    for old, new in RENAMED.items():
        section, old_key = old.split(".")
        node = data.get(section)
        if not isinstance(node, dict) or old_key not in node:
            continue
        new_key = new.split(".")[1]
        if new_key in node:
            raise ConfigError(f"{source}: '{old}' and '{new}' are the same key (renamed); keep '{new}'")
        LOG.warning("%s: config key '%s' is now '%s'; the old name will stop working", source, old, new)
        node[new_key] = node.pop(old_key)


def _check_keys(data: Any, cls: type, where: str, source: str) -> None:
    """Reject keys that are not fields, naming the full dotted key and the file."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: '{where or 'top level'}' must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    for key, value in data.items():
        dotted = f"{where}.{key}" if where else str(key)
        if key not in hints:
            raise ConfigError(f"{source}: unknown config key '{dotted}' (known: {', '.join(sorted(hints))})")
        if dataclasses.is_dataclass(hints[key]):
            _check_keys(value, hints[key], dotted, source)
        elif isinstance(value, bool) and hints[key] not in (bool, Optional[bool]):
            # YAML's true/false would otherwise pass as the numbers 1 and 0.
            raise ConfigError(f"{source}: '{dotted}' must be {_type_name(hints[key])}, got {value!r}")


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


def _to_float(value: Any) -> Any:
    # YAML reads "5" as int (a float field stores it as 5.0) and, being YAML 1.1, reads "1e-3" as text.
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value  # not a number: dacite reports the wrong type, naming the key
    return value


def _to_str(value: Any) -> Any:
    # A text field given a number or a date (split_time: 1339227110, or YAML's 2016-06-01) keeps it as text.
    if isinstance(value, (int, float, datetime.date)) and not isinstance(value, bool):
        return str(value)
    return value


def apply_overrides(data: Dict[str, Any], overrides: Sequence[str]) -> Dict[str, Any]:
    """Apply ``section.key=value`` overrides; values are parsed as YAML scalars."""
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        dotted, raw = item.split("=", 1)
        # At most section.key.subkey: a subkey (a spark.conf entry) may itself contain dots.
        parts = dotted.strip().split(".", 2)
        if len(parts) < 2 or not all(parts):
            raise ConfigError(f"override {item!r}: key must be section.key (for example prepare.seed=1)")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r}: '{part}' is not a section")
        if len(parts) == 3 and parts[0] == "spark":
            node[parts[-1]] = raw.strip()  # spark.conf values are passed to Spark as text
        else:
            node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    return data


def _merge(base: Dict[str, Any], top: Dict[str, Any]) -> Dict[str, Any]:
    """``top`` over ``base``: sections merge key by key, anything else is replaced."""
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _read_yaml(path: str) -> Dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    return data


def load_config(path: Union[None, str, Sequence[str]] = None, overrides: Sequence[str] = ()) -> Config:
    """Load YAML config files (or the defaults when ``path`` is None) and apply overrides.

    Parameters
    ----------
    path
        A YAML file, or several layered in order (a later file's keys win, section by section: the
        demo is ``conf/local.yaml`` then ``conf/demo.yaml``); sections and keys must match the
        dataclasses above.
    overrides
        ``section.key=value`` strings, applied after the files.

    Raises
    ------
    ConfigError
        For a missing file, bad YAML, an unknown key or a value of the wrong type.
    """
    paths = [] if path is None else [path] if isinstance(path, str) else list(path)
    data: Dict[str, Any] = {}
    for one in paths:
        data = _merge(data, _read_yaml(one))
    source = " + ".join(str(p) for p in paths) or "defaults"
    data = apply_overrides(data, overrides)
    if overrides:
        source = f"{source} + --set"
    _renamed(data, source)
    _check_keys(data, Config, "", source)
    try:
        return dacite.from_dict(Config, data, config=dacite.Config(strict=True, type_hooks={float: _to_float, str: _to_str}))
    except dacite.DaciteError as exc:
        raise ConfigError(f"{source}: {exc}") from exc

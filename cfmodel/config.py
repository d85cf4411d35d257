"""Typed configuration loaded from YAML, with command-line overrides.

A config file has one section per stage (``spark``, ``generate``, ``prepare``, ...).
Every key must be a field of that section's dataclass: a misspelt key is an error
that names it, never a silently ignored setting. The ``train`` and ``tune``
sections live in :mod:`cfmodel.train_config`, ``score`` and ``evaluate`` in
:mod:`cfmodel.output_config`; this module re-exports them.
"""
from __future__ import annotations

import dataclasses
import datetime
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import dacite
import yaml

from cfmodel.errors import ConfigError
from cfmodel.errors import require as _require
from cfmodel.output_config import EvaluateConfig, ScoreConfig
from cfmodel.train_config import TrainConfig, TuneConfig


@dataclass
class SparkConfig:
    """How jobs start Spark.

    ``master`` is used only when the job is not launched by ``spark-submit``
    (which decides the master itself).
    """

    master: str = "local[*]"
    app_name: str = "cfmodel"
    log_level: str = "WARN"
    conf: Dict[str, Union[str, int, float, bool]] = field(default_factory=dict)


@dataclass
class GenerateConfig:
    """Synthetic MovieLens-format ratings (or, ``feedback: implicit``, events) from planted factors (the demo's
    input)."""

    output: str = "data/demo"
    n_users: int = 2000
    n_items: int = 3000
    n_ratings: int = 200_000
    n_factors: int = 8
    noise: float = 0.5
    seed: int = 42
    feedback: str = "explicit"
    popularity_skew: float = 1.0

    def __post_init__(self) -> None:
        _require(self.feedback in ("explicit", "implicit"),
                 f"generate.feedback must be explicit or implicit, got {self.feedback!r}")
        _require(self.n_users >= 1, "generate.n_users must be >= 1")
        _require(self.n_items >= 2, "generate.n_items must be >= 2")
        _require(self.n_ratings >= self.n_users, "generate.n_ratings must be >= generate.n_users")
        _require(self.n_factors >= 1, "generate.n_factors must be >= 1")
        _require(self.noise >= 0, "generate.noise must be >= 0")
        _require(self.popularity_skew >= 0, "generate.popularity_skew must be >= 0")


INPUT_FORMATS = ("auto", "csv", "tsv", "parquet")
COLD_START_POLICIES = ("train", "drop", "keep")
SPLITS = ("random", "per_user", "time")
FEEDBACKS = ("auto", "explicit", "implicit")
ID_TYPE_CHOICES = ("auto", "int", "long", "string")
CHECKSUMS = ("content", "listing")


@dataclass
class PrepareConfig:
    """Clean, index and split ratings; see README "prepare" for each key."""

    input: Optional[str] = None
    output: str = "data/prepared"
    input_format: str = "auto"
    user_col: str = "userId"
    item_col: str = "movieId"
    rating_col: Optional[str] = "rating"
    timestamp_col: Optional[str] = "timestamp"
    feedback: str = "auto"
    weight_col: Optional[str] = None
    id_type: str = "auto"
    rating_min: Optional[float] = 0.5
    rating_max: Optional[float] = 5.0
    rating_step: Optional[float] = 0.5
    min_user_ratings: int = 1
    min_item_ratings: int = 1
    split: str = "random"
    split_time: Optional[str] = None
    valid_fraction: float = 0.2
    seed: int = 42
    cold_start: str = "train"
    max_quarantine_fraction: float = 0.05
    keep_ids: bool = True
    rows_per_file: int = 2_000_000
    row_group_mb: int = 8
    checksum: str = "content"
    checksum_chunk_mb: int = 8
    min_files: int = 8

    def __post_init__(self) -> None:
        _require(self.checksum in CHECKSUMS, f"prepare.checksum must be one of {CHECKSUMS}, got {self.checksum!r}")
        _require(self.checksum_chunk_mb >= 1, "prepare.checksum_chunk_mb must be >= 1")
        _require(self.input_format in INPUT_FORMATS,
                 f"prepare.input_format must be one of {INPUT_FORMATS}, got {self.input_format!r}")
        _require(self.split in SPLITS, f"prepare.split must be one of {SPLITS}, got {self.split!r}")
        _require(self.cold_start in COLD_START_POLICIES,
                 f"prepare.cold_start must be one of {COLD_START_POLICIES}, got {self.cold_start!r}")
        _require(0.0 < self.valid_fraction < 1.0, "prepare.valid_fraction must be in (0, 1)")
        _require(self.id_type in ID_TYPE_CHOICES,
                 f"prepare.id_type must be one of {ID_TYPE_CHOICES}, got {self.id_type!r}")
        _require(self.feedback in FEEDBACKS, f"prepare.feedback must be one of {FEEDBACKS}, got {self.feedback!r}")
        _require(not (self.feedback == "explicit" and self.rating_col is None),
                 "prepare.feedback=explicit needs prepare.rating_col (null: events, implicit feedback)")
        _require(self.rating_min is None or self.rating_max is None or self.rating_min < self.rating_max,
                 "prepare.rating_min must be < prepare.rating_max")
        _require(self.split != "time" or self.timestamp_col is not None,
                 "prepare.split=time needs prepare.timestamp_col")
        _require(self.split_time is None or self.split == "time", "prepare.split_time needs prepare.split=time")
        _require(self.rating_step is None or self.rating_step > 0, "prepare.rating_step must be > 0 or null")
        _require(0.0 <= self.max_quarantine_fraction <= 1.0,
                 "prepare.max_quarantine_fraction must be in [0, 1]")
        _require(self.min_user_ratings >= 1 and self.min_item_ratings >= 1,
                 "prepare.min_user_ratings and prepare.min_item_ratings must be >= 1")
        _require(self.rows_per_file >= 1 and self.row_group_mb >= 1 and self.min_files >= 1,
                 "prepare.rows_per_file, prepare.row_group_mb and prepare.min_files must be >= 1")
        names = [self.user_col, self.item_col, self.rating_col, self.timestamp_col, self.weight_col]
        names = [n for n in names if n]
        _require(len(set(names)) == len(names), f"prepare column names must differ, got {names}")


PIPELINE_STAGES = ("generate", "prepare", "tune", "train", "score", "evaluate")


@dataclass
class PipelineConfig:
    """``cf-pipeline``: where versioned runs go and which stages run; see README "pipeline"."""

    output_root: str = "runs"
    local_dir: str = "/tmp/cfmodel"
    stages: List[str] = field(default_factory=lambda: ["prepare", "train", "score", "evaluate"])
    keep_runs: int = 0

    def __post_init__(self) -> None:
        bad = [s for s in self.stages if s not in PIPELINE_STAGES]
        _require(not bad and self.stages, f"pipeline.stages must be a non-empty list from {PIPELINE_STAGES}, "
                                          f"got {bad or self.stages}")
        order = [PIPELINE_STAGES.index(s) for s in self.stages]
        _require(order == sorted(set(order)), f"pipeline.stages must be in the order {PIPELINE_STAGES}, no repeats")
        _require(self.keep_runs >= 0, "pipeline.keep_runs must be >= 0 (0 keeps every run)")


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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)


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
    _check_keys(data, Config, "", source)
    try:
        return dacite.from_dict(Config, data, config=dacite.Config(strict=True, type_hooks={float: _to_float, str: _to_str}))
    except dacite.DaciteError as exc:
        raise ConfigError(f"{source}: {exc}") from exc

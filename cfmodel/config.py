"""Typed configuration loaded from YAML, with command-line overrides.

A config file has one section per stage (``spark``, ``generate``, ``prepare``, ...).
Every key must be a field of that section's dataclass: a misspelt key is an error
that names it, never a silently ignored setting. The ``train`` and ``tune``
sections live in :mod:`cfmodel.train_config`.
"""
from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

import dacite
import yaml

from cfmodel.errors import ConfigError
from cfmodel.errors import require as _require
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
    """Synthetic MovieLens-format ratings from planted factors (the demo's input)."""

    output: str = "data/demo"
    n_users: int = 2000
    n_items: int = 3000
    n_ratings: int = 200_000
    n_factors: int = 8
    noise: float = 0.5
    seed: int = 42

    def __post_init__(self) -> None:
        _require(self.n_users >= 1, "generate.n_users must be >= 1")
        _require(self.n_items >= 2, "generate.n_items must be >= 2")
        _require(self.n_ratings >= self.n_users, "generate.n_ratings must be >= generate.n_users")
        _require(self.n_factors >= 1, "generate.n_factors must be >= 1")
        _require(self.noise >= 0, "generate.noise must be >= 0")


INPUT_FORMATS = ("auto", "csv", "tsv", "parquet")
COLD_START_POLICIES = ("train", "drop", "keep")
SPLITS = ("random", "per_user")


@dataclass
class PrepareConfig:
    """Clean, index and split ratings; see README "prepare" for each key."""

    input: str = "data/demo/ratings.csv"
    output: str = "data/prepared"
    input_format: str = "auto"
    user_col: str = "userId"
    item_col: str = "movieId"
    rating_col: str = "rating"
    timestamp_col: Optional[str] = "timestamp"
    rating_min: float = 0.5
    rating_max: float = 5.0
    rating_step: Optional[float] = 0.5
    min_user_ratings: int = 1
    min_item_ratings: int = 1
    split: str = "random"
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
        _require(self.rating_min < self.rating_max, "prepare.rating_min must be < prepare.rating_max")
        _require(self.rating_step is None or self.rating_step > 0, "prepare.rating_step must be > 0 or null")
        _require(0.0 <= self.max_quarantine_fraction <= 1.0,
                 "prepare.max_quarantine_fraction must be in [0, 1]")
        _require(self.min_user_ratings >= 1 and self.min_item_ratings >= 1,
                 "prepare.min_user_ratings and prepare.min_item_ratings must be >= 1")
        _require(self.rows_per_file >= 1 and self.row_group_mb >= 1 and self.min_files >= 1,
                 "prepare.rows_per_file, prepare.row_group_mb and prepare.min_files must be >= 1")
        names = [self.user_col, self.item_col, self.rating_col, self.timestamp_col]
        names = [n for n in names if n]
        _require(len(set(names)) == len(names), f"prepare column names must differ, got {names}")


CHECKSUMS = ("content", "listing")
FALLBACKS = ("bias", "popular")
SCORE_FORMATS = ("parquet", "nested", "csv", "jsonl")


@dataclass
class ScoreConfig:
    """Top-N recommendations for every user; see README "score"."""

    model: str = "data/model"
    data: str = "data/prepared"
    output: str = "data/recommendations"
    top_n: int = 10
    exclude_valid: bool = True
    users: Optional[str] = None
    min_item_ratings: int = 1
    exclude_items: List[int] = field(default_factory=list)
    fallback: str = "bias"
    block_size: int = 256
    partitions: int = 0
    torch_threads: int = 1
    broadcast_max_mb: int = 1024
    formats: List[str] = field(default_factory=lambda: ["parquet", "nested"])
    output_files: int = 4
    model_version: Optional[str] = None
    titles: Optional[str] = None
    show_examples: int = 3
    ratings: Optional[str] = None
    fold_in_min_ratings: int = 5
    fold_in_method: str = "auto"
    fold_in_refresh: bool = False
    fold_in_reg: float = 0.1
    fold_in_newton_steps: int = 3

    def __post_init__(self) -> None:
        _require(self.top_n >= 1, "score.top_n must be >= 1")
        _require(self.block_size >= 1 and self.output_files >= 1 and self.torch_threads >= 1,
                 "score.block_size, score.output_files and score.torch_threads must be >= 1")
        _require(self.fallback in FALLBACKS, f"score.fallback must be one of {FALLBACKS}, got {self.fallback!r}")
        bad = [f for f in self.formats if f not in SCORE_FORMATS]
        _require(not bad and self.formats, f"score.formats must be a non-empty list from {SCORE_FORMATS}, got {bad}")
        _require(self.broadcast_max_mb >= 1, "score.broadcast_max_mb must be >= 1")
        _require(self.partitions >= 0, "score.partitions must be >= 0 (0: Spark's default parallelism)")
        _require(self.fold_in_min_ratings >= 1 and self.fold_in_reg > 0 and self.fold_in_newton_steps >= 0,
                 "score.fold_in_min_ratings must be >= 1, score.fold_in_reg > 0, score.fold_in_newton_steps >= 0")
        _require(self.fold_in_method in ("auto", "adam", "ridge"),
                 f"score.fold_in_method must be auto, adam or ridge, got {self.fold_in_method!r}")


BASELINES = ("global_mean", "biases", "popular", "als", "implicit_als", "ease")
DEFAULT_BASELINES = ("global_mean", "biases", "popular", "als")


@dataclass
class EvaluateConfig:
    """Metrics, baselines and the interpretation report (``cf-report``); see README "evaluate"."""

    model: str = "data/model"
    data: str = "data/prepared"
    output: str = "data/report"
    k: int = 10
    relevance_threshold: Optional[float] = 4.0
    baselines: List[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    bias_reg: float = 5.0
    als_rank: int = 10
    als_reg: float = 0.1
    als_max_iter: int = 10
    implicit_als_ranks: List[int] = field(default_factory=lambda: [32, 64])
    implicit_als_regs: List[float] = field(default_factory=lambda: [0.01, 0.1])
    implicit_als_alphas: List[float] = field(default_factory=lambda: [1.0, 10.0, 40.0])
    ease_lambda: float = 300.0
    ease_max_items: int = 20_000
    titles: Optional[str] = None
    top_movies: int = 500
    similar_to: List[int] = field(default_factory=list)
    table_size: int = 15
    sample_rows: int = 20_000
    seed: int = 42
    max_valid_rmse: Optional[float] = None

    def __post_init__(self) -> None:
        _require(self.k >= 1, "evaluate.k must be >= 1")
        bad = [b for b in self.baselines if b not in BASELINES]
        _require(not bad, f"evaluate.baselines must be from {BASELINES}, got {bad}")
        _require(self.bias_reg >= 0 and self.als_reg >= 0, "evaluate.bias_reg and evaluate.als_reg must be >= 0")
        _require(self.als_rank >= 1 and self.als_max_iter >= 1, "evaluate.als_rank and als_max_iter must be >= 1")
        _require(bool(self.implicit_als_ranks and self.implicit_als_regs and self.implicit_als_alphas),
                 "evaluate.implicit_als_ranks, implicit_als_regs and implicit_als_alphas must not be empty")
        _require(self.ease_lambda > 0 and self.ease_max_items >= 1,
                 "evaluate.ease_lambda must be > 0 and evaluate.ease_max_items >= 1")
        _require(self.top_movies >= 3 and self.table_size >= 1 and self.sample_rows >= 1,
                 "evaluate.top_movies must be >= 3, evaluate.table_size and sample_rows >= 1")
        _require(self.max_valid_rmse is None or self.max_valid_rmse > 0, "evaluate.max_valid_rmse must be > 0")


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


def load_config(path: Optional[str] = None, overrides: Sequence[str] = ()) -> Config:
    """Load a YAML config file (or the defaults when ``path`` is None) and apply overrides.

    Parameters
    ----------
    path
        YAML file; sections and keys must match the dataclasses above.
    overrides
        ``section.key=value`` strings, applied after the file.

    Raises
    ------
    ConfigError
        For a missing file, bad YAML, an unknown key or a value of the wrong type.
    """
    data: Dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(p.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    data = apply_overrides(data, overrides)
    if overrides:
        source = f"{source} + --set"
    _check_keys(data, Config, "", source)
    try:
        return dacite.from_dict(Config, data, config=dacite.Config(strict=True, type_hooks={float: _to_float}))
    except dacite.DaciteError as exc:
        raise ConfigError(f"{source}: {exc}") from exc

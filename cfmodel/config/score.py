"""The ``score`` section: the lists a run hands out, and fold-in of newcomers."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Union

from cfmodel.errors import require as _require

FALLBACKS = ("bias", "popular")
SCORE_FORMATS = ("parquet", "nested", "csv", "jsonl")


@dataclass
class ScoreConfig:
    """Top-N recommendations for every user; keys in docs/configuration.md."""

    model: str = "data/model"
    data: str = "data/prepared"
    output: str = "data/recommendations"
    top_n: int = 10
    exclude_valid: bool = True
    users: Optional[str] = None
    min_candidate_ratings: int = 1
    exclude_items: List[Union[int, str]] = field(default_factory=list)
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

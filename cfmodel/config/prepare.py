"""The ``prepare`` section: reading, cleaning, splitting and indexing the input."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from cfmodel.errors import require as _require

INPUT_FORMATS = ("auto", "csv", "tsv", "parquet")
COLD_START_POLICIES = ("train", "drop", "keep")
SPLITS = ("random", "per_user", "time")
FEEDBACKS = ("auto", "explicit", "implicit")
ID_TYPE_CHOICES = ("auto", "int", "long", "string")
CHECKSUMS = ("content", "listing")


@dataclass
class PrepareConfig:
    """Clean, index and split ratings; keys in docs/configuration.md."""

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
    rating_min: Optional[float] = None
    rating_max: Optional[float] = None
    rating_step: Optional[float] = None
    min_user_ratings: int = 1
    min_item_ratings: int = 1
    split: str = "random"
    split_time: Optional[str] = None
    valid_fraction: float = 0.2
    seed: int = 42
    valid_cold_start: str = "train"
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
        _require(self.valid_cold_start in COLD_START_POLICIES,
                 f"prepare.valid_cold_start must be one of {COLD_START_POLICIES}, got {self.valid_cold_start!r}")
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

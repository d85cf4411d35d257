"""Raw input to clean (user, item, rating) pairs by prepare's rules: every row classified, bad rows
quarantined with a reason, each pair's latest good rating kept (events: counted), the quarantine gate
applied. Prepare runs it on its input; score runs it on ratings newer than the model (fold-in).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Optional, Tuple

from pyspark.sql import DataFrame
from pyspark.sql import functions as F

from cfmodel.config import PrepareConfig
from cfmodel.errors import InputError, QualityGateError
from cfmodel.ingest.infer import STEP_CANDIDATES, id_types_of, rating_scale
from cfmodel.ingest.rules import RatingRule, bad_rows, classify, events_by_pair, latest_by_pair
from cfmodel.ingest.source import ColumnSpec


def column_spec(cfg: PrepareConfig) -> ColumnSpec:
    return ColumnSpec(cfg.user_col, cfg.item_col, cfg.rating_col, cfg.timestamp_col, cfg.weight_col, cfg.feedback)


def _quarantine_message(n_input: int, n_bad: int, by_reason: Dict[str, int], bad: DataFrame,
                        limit: float, id_types: Tuple[str, str] = ("int", "int")) -> str:
    example = bad.first()
    where = ""
    if example is not None:
        where = (f"; e.g. {example['_source_file']}: user={example['user']!r} item={example['item']!r} "
                 f"rating={example['rating']!r} ({example['reason']})")
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1]))
    hint = ""
    if {"bad_user_id", "bad_item_id"} & set(by_reason):
        hint = (f" (ids read as user {id_types[0]}, item {id_types[1]}; prepare.id_type=string takes any "
                f"text id)")
    return (f"quarantined {n_bad} of {n_input} rows ({n_bad / n_input:.1%}), over the limit of "
            f"{limit:.1%} (prepare.max_quarantine_fraction): {reasons}{hint}{where}")


@dataclass
class Cleaned:
    """Classified input: the deduplicated good ratings (cached), the quarantine and the counts of each."""

    ratings: DataFrame
    quarantine: DataFrame
    by_reason: Dict[str, int]
    n_good: int
    n_pairs: int
    approx_users: int  # HyperLogLog estimates, for choosing joins
    approx_items: int
    cached: DataFrame
    scale: Dict[str, Any] = field(default_factory=dict)
    id_types: Tuple[str, str] = ("int", "int")

    @property
    def n_input(self) -> int:
        return self.n_good + sum(self.by_reason.values())


def clean_input(raw: DataFrame, cfg: PrepareConfig, feedback: str = "explicit",
                id_types: Optional[Tuple[str, str]] = None) -> Cleaned:
    """Classify raw rows, count them by reason, keep each pair's latest good rating (for ``implicit``
    feedback: count each pair's events, :func:`events_by_pair`); applies the quarantine gate.

    The input is parsed once for all of it (:func:`latest_by_pair`). The quarantine is a second, lazy read
    of the input, made only when rows were quarantined (the gate's message or the written output).
    """
    implicit = feedback == "implicit"
    scale = (None, None, None) if implicit else (cfg.rating_min, cfg.rating_max, cfg.rating_step)
    rule = RatingRule(*scale, cfg.timestamp_col is not None, feedback, cfg.weight_col is not None)
    id_types = id_types or id_types_of(raw, cfg)
    classified = classify(raw, rule, id_types)
    pairs = (events_by_pair if implicit else latest_by_pair)(classified).persist()
    rating = F.col("rating")
    stats = {r["reason"]: r for r in pairs.groupBy("reason").agg(
        F.sum("n").alias("rows"), F.count(F.lit(1)).alias("pairs"),
        F.approx_count_distinct("user_id").alias("users"), F.approx_count_distinct("item_id").alias("items"),
        F.min(rating).alias("low"), F.max(rating).alias("high"),
        *[F.max(F.abs(rating / c - F.round(rating / c))).alias(f"off_{i}") for i, c in enumerate(STEP_CANDIDATES)],
    ).collect()}
    good = stats.pop(None, {"rows": 0, "pairs": 0, "users": 0, "items": 0})
    by_reason = {reason: row["rows"] for reason, row in stats.items()}
    n_bad = sum(by_reason.values())
    quarantine = bad_rows(classified)
    if not n_bad:
        quarantine = raw.sparkSession.createDataFrame([], quarantine.schema)
    cleaned = Cleaned(ratings=pairs.where(F.col("reason").isNull()).drop("reason", "n"), quarantine=quarantine,
                      by_reason=by_reason, n_good=good["rows"], n_pairs=good["pairs"], approx_users=good["users"],
                      approx_items=good["items"], cached=pairs, id_types=id_types)
    n_input = cleaned.n_input
    if n_input == 0:
        pairs.unpersist()
        raise InputError(f"{cfg.input}: no data rows (empty or header only)")
    if n_bad > cfg.max_quarantine_fraction * n_input:
        message = _quarantine_message(n_input, n_bad, by_reason, quarantine, cfg.max_quarantine_fraction, id_types)
        pairs.unpersist()
        raise QualityGateError(message)
    cleaned.scale = rating_scale(good, cfg, feedback) if cleaned.n_pairs else {}
    return cleaned

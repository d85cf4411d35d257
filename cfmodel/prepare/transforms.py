"""The prepare stage: raw ratings -> clean, indexed, split frames, and how to write them.

``prepare_ratings`` chains the pure transforms of :mod:`cfmodel.prepare.clean`,
:mod:`cfmodel.prepare.split` and :mod:`cfmodel.prepare.index`, counting what each step removes
so that the counts reconcile::

    input_rows = train + valid + quarantined + duplicates_dropped + events_merged
                 + removed_min_user + removed_min_item + cold_start_dropped
"""
from __future__ import annotations

import logging
import math
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import pyarrow
import pyspark
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import cfmodel
from cfmodel.prepare.clean import RatingRule, bad_rows, classify, events_by_pair, filter_min_counts, latest_by_pair
from cfmodel.config import PrepareConfig
from cfmodel.errors import InputError, QualityGateError
from cfmodel.prepare.index import apply_index, build_index
from cfmodel.prepare.infer import STEP_CANDIDATES, id_types_of, rating_scale, split_cutoff
from cfmodel.prepare.source import ColumnSpec
from cfmodel.prepare.split import apply_cold_start, cold_start_rows, split_frames, split_rows

LOG = logging.getLogger(__name__)

# Id sets up to this many rows are broadcast to the joins that need them (about 20 bytes an id), so the
# ratings are not shuffled to meet them; larger ones are joined by shuffling both sides.
BROADCAST_MAX_ROWS = 1_000_000


@dataclass
class Prepared:
    """The prepare stage's frames and its reconciled counts."""

    train: DataFrame
    valid: DataFrame
    users: DataFrame
    items: DataFrame
    quarantine: DataFrame
    counts: Dict[str, Any] = field(default_factory=dict)
    cached: List[DataFrame] = field(default_factory=list)
    feedback: str = "explicit"
    scale: Dict[str, Any] = field(default_factory=dict)
    id_types: Tuple[str, str] = ("int", "int")

    def release(self) -> None:
        """Unpersist the frames the chain cached. Until then Spark serves a later read of the same input in
        this session from the cache (a changed file would read as it was), and holds the memory."""
        for frame in self.cached:
            frame.unpersist()


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


def _reconciled(counts: Dict[str, Any]) -> Dict[str, Any]:
    """``counts`` with ``reconciled``: every input row is accounted for (else a bug: raise)."""
    accounted = (counts["train_rows"] + counts["valid_rows"] + counts["quarantined"] + counts["duplicates_dropped"]
                 + counts["events_merged"] + counts["removed_min_user"] + counts["removed_min_item"] + counts["cold_start_dropped"])
    counts["reconciled"] = accounted == counts["input_rows"]
    if not counts["reconciled"]:
        # A bug, not bad input: rows vanished somewhere between steps.
        raise RuntimeError(f"prepare counts do not reconcile: {counts}")
    return counts


def _indexed_split(kept: DataFrame):
    """(users, items, train, valid, n_users, n_items): the id maps (cached), and the rows with indices split
    by ``is_valid``."""
    users = build_index(kept, "user_id", "user_idx").persist()
    items = build_index(kept, "item_id", "item_idx").persist()
    n_users, n_items = users.count(), items.count()
    indexed = apply_index(kept, users, "user_id", "user_idx", broadcast=n_users <= BROADCAST_MAX_ROWS)
    indexed = apply_index(indexed, items, "item_id", "item_idx", broadcast=n_items <= BROADCAST_MAX_ROWS)
    train, valid = split_frames(indexed.select(
        F.col("user_idx").cast("int"), F.col("item_idx").cast("int"), F.col("rating").cast("float"),
        "user_id", "item_id", F.col("timestamp").cast("long"),
        "is_valid", "is_cold"))
    return users, items, train, valid, n_users, n_items


def _min_counts(ratings: DataFrame, n_rows: int, column: str, minimum: int):
    """(rows whose ``column`` value has ``minimum`` ratings or more, their count, the frame cached or None)."""
    if minimum <= 1:
        return ratings, n_rows, None
    kept = filter_min_counts(ratings, column, minimum).persist()
    return kept, kept.count(), kept


def prepare_ratings(raw: DataFrame, cfg: PrepareConfig, feedback: str = "explicit") -> Prepared:
    """Clean, deduplicate (for ``implicit`` feedback: count events), filter, split and index raw ratings.

    Parameters
    ----------
    raw
        Text ratings as :func:`cfmodel.prepare.source.read_ratings` returns them.
    cfg
        The ``prepare`` config section.

    Raises
    ------
    InputError
        The input has no data rows, or nothing survives cleaning.
    QualityGateError
        The quarantined share exceeds ``max_quarantine_fraction``.
    """
    cutoff = split_cutoff(raw.sparkSession, cfg)
    cleaned = clean_input(raw, cfg, feedback)
    by_user, n_by_user, user_cache = _min_counts(cleaned.ratings, cleaned.n_pairs, "user_id", cfg.min_user_ratings)
    by_item, n_by_item, item_cache = _min_counts(by_user, n_by_user, "item_id", cfg.min_item_ratings)

    flagged = cold_start_rows(split_rows(by_item, cfg.split, cfg.valid_fraction, cfg.seed, cutoff),
                              broadcast=(cleaned.approx_users <= BROADCAST_MAX_ROWS,
                                         cleaned.approx_items <= BROADCAST_MAX_ROWS))
    kept = apply_cold_start(flagged, cfg.cold_start).persist()
    summary = kept.agg(F.count(F.lit(1)).alias("n"),
                       F.sum(F.col("is_valid").cast("int")).alias("valid"),
                       F.sum(F.col("is_cold").cast("int")).alias("cold")).first()
    n_kept, n_valid, n_cold_kept = summary["n"], summary["valid"] or 0, summary["cold"] or 0
    for frame in (cleaned.cached, user_cache, item_cache):
        if frame is not None:
            frame.unpersist()  # kept is cached whole now: free the memory before indexing
    if n_kept == 0:
        raise InputError(f"{cfg.input}: no ratings left after cleaning and minimum counts")

    users, items, train, valid, n_users, n_items = _indexed_split(kept)
    counts = _reconciled({
        "input_rows": cleaned.n_input,
        "quarantined": cleaned.n_input - cleaned.n_good,
        "quarantined_by_reason": dict(sorted(cleaned.by_reason.items())),
        # Explicit ratings keep each pair's latest; events are merged into one row per pair, counted.
        "duplicates_dropped": 0 if feedback == "implicit" else cleaned.n_good - cleaned.n_pairs,
        "events_merged": cleaned.n_good - cleaned.n_pairs if feedback == "implicit" else 0,
        "removed_min_user": cleaned.n_pairs - n_by_user,
        "removed_min_item": n_by_user - n_by_item,
        "cold_start_rows": n_cold_kept if cfg.cold_start != "drop" else n_by_item - n_kept,
        "cold_start_policy": cfg.cold_start,
        "cold_start_dropped": n_by_item - n_kept,
        "train_rows": n_kept - n_valid,
        "valid_rows": n_valid,
        "n_users": n_users,
        "n_items": n_items,
    })
    return Prepared(train=train, valid=valid, users=users, items=items, quarantine=cleaned.quarantine,
                    counts=counts, cached=[kept, users, items], feedback=feedback, scale=cleaned.scale,
                    id_types=cleaned.id_types)


def build_meta(prepared: Prepared, cfg: PrepareConfig, input_info: Dict[str, Any]) -> Dict[str, Any]:
    """The ``meta.json`` that ties a prepare output to its input, config and versions."""
    counts = prepared.counts
    return {
        "n_users": counts["n_users"],
        "n_items": counts["n_items"],
        "counts": counts,
        "feedback": prepared.feedback,
        "rating": prepared.scale,
        "id_types": {"user": prepared.id_types[0], "item": prepared.id_types[1]},
        "split": {"method": cfg.split, "valid_fraction": cfg.valid_fraction, "seed": cfg.seed,
                  "cold_start": cfg.cold_start, "split_time": cfg.split_time},
        "input": input_info,
        "config": asdict(cfg),
        "versions": {"cfmodel": cfmodel.__version__, "spark": pyspark.__version__,
                     "pyarrow": pyarrow.__version__, "python": platform.python_version()},
    }


def _shuffled(frame: DataFrame, rows: int, rows_per_file: int, min_files: int, seed: int) -> DataFrame:
    # Rows in a pseudo-random but fixed order, so a streaming reader's row groups
    # each hold a mix of users and items (the trainer's shuffle buffer then suffices).
    # At least min_files files: data-parallel training reads one Petastorm shard (whole row groups) per
    # process, and Petastorm refuses more shards than row groups.
    files = max(1, min(rows, max(min_files, math.ceil(rows / rows_per_file))))
    # Hashed, not ranged, into the files: the key is a hash already, and a range needs a sampling pass.
    key = F.xxhash64("user_idx", "item_idx", F.lit(int(seed) + 1))
    return frame.repartition(files, key).sortWithinPartitions(key)


def write_prepared(prepared: Prepared, out: str, cfg: PrepareConfig) -> None:
    """Write ``train/ valid/ users/ items/ quarantine/`` Parquet under ``out``."""
    ids = ["user_id", "item_id", "timestamp"] if cfg.keep_ids else []
    block = str(cfg.row_group_mb * 1024 * 1024)
    for name, frame, rows in (("train", prepared.train, prepared.counts["train_rows"]),
                              ("valid", prepared.valid, prepared.counts["valid_rows"])):
        data = _shuffled(frame.select("user_idx", "item_idx", "rating", *ids), rows, cfg.rows_per_file,
                         cfg.min_files, cfg.seed)
        data.write.option("parquet.block.size", block).parquet(f"{out}/{name}")
    for name, frame, idx in (("users", prepared.users, "user_idx"), ("items", prepared.items, "item_idx")):
        frame.coalesce(1).orderBy(idx).write.parquet(f"{out}/{name}")
    original = {"user": cfg.user_col, "item": cfg.item_col, "rating": cfg.rating_col,
                "timestamp": cfg.timestamp_col or "timestamp"}
    quarantine = prepared.quarantine.select(*[F.col(c).alias(original.get(c, c))
                                              for c in prepared.quarantine.columns])
    quarantine.coalesce(1).write.parquet(f"{out}/quarantine")

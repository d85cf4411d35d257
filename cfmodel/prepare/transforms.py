"""The prepare stage: raw ratings -> clean, indexed, split frames, and how to write them.

``prepare_ratings`` chains the pure transforms of :mod:`cfmodel.prepare.clean`,
:mod:`cfmodel.prepare.split` and :mod:`cfmodel.prepare.index`, counting what each step removes
so that the counts reconcile::

    input_rows = train + valid + quarantined + duplicates_dropped
                 + removed_min_user + removed_min_item + cold_start_dropped
"""
from __future__ import annotations

import logging
import math
import platform
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List

import pyarrow
import pyspark
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import cfmodel
from cfmodel.prepare.clean import RatingRule, bad_rows, classify, drop_duplicates_latest, filter_min_counts, good_rows
from cfmodel.config import PrepareConfig
from cfmodel.errors import InputError, QualityGateError
from cfmodel.prepare.index import apply_index, build_index
from cfmodel.prepare.source import ColumnSpec
from cfmodel.prepare.split import apply_cold_start, cold_start_rows, split_frames, split_rows

LOG = logging.getLogger(__name__)


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

    def release(self) -> None:
        """Unpersist the frames the chain cached. Until then Spark serves a later read of the same input in
        this session from the cache (a changed file would read as it was), and holds the memory."""
        for frame in self.cached:
            frame.unpersist()


def column_spec(cfg: PrepareConfig) -> ColumnSpec:
    return ColumnSpec(cfg.user_col, cfg.item_col, cfg.rating_col, cfg.timestamp_col)


def _quarantine_message(n_input: int, n_bad: int, by_reason: Dict[str, int], bad: DataFrame,
                        limit: float) -> str:
    example = bad.first()
    where = ""
    if example is not None:
        where = (f"; e.g. {example['_source_file']}: user={example['user']!r} item={example['item']!r} "
                 f"rating={example['rating']!r} ({example['reason']})")
    reasons = ", ".join(f"{k}={v}" for k, v in sorted(by_reason.items(), key=lambda kv: -kv[1]))
    return (f"quarantined {n_bad} of {n_input} rows ({n_bad / n_input:.1%}), over the limit of "
            f"{limit:.1%} (prepare.max_quarantine_fraction): {reasons}{where}")


def classify_input(raw: DataFrame, cfg: PrepareConfig):
    """(classified rows, quarantine, bad rows by reason, good row count); applies the quarantine gate."""
    rule = RatingRule(cfg.rating_min, cfg.rating_max, cfg.rating_step, cfg.timestamp_col is not None)
    parsed = classify(raw, rule)
    # Cached narrow: a good row needs only its parsed values, and its raw text (the source path above all)
    # would fill the heap at scale; a quarantined row keeps its text for the quarantine output.
    bad = F.col("reason").isNotNull()
    raw_text = [F.when(bad, F.col(c)).alias(c) for c in raw.columns]
    classified = parsed.select(*raw_text, *[c for c in parsed.columns if c not in raw.columns]).persist()
    by_reason = {r["reason"]: r["count"] for r in classified.groupBy("reason").count().collect()}
    n_good = by_reason.pop(None, 0)
    n_bad = sum(by_reason.values())
    n_input = n_good + n_bad
    if n_input == 0:
        raise InputError(f"{cfg.input}: no data rows (empty or header only)")
    quarantine = bad_rows(classified)
    if n_bad > cfg.max_quarantine_fraction * n_input:
        message = _quarantine_message(n_input, n_bad, by_reason, quarantine, cfg.max_quarantine_fraction)
        classified.unpersist()
        raise QualityGateError(message)
    return classified, quarantine, by_reason, n_good


def _reconciled(counts: Dict[str, Any]) -> Dict[str, Any]:
    """``counts`` with ``reconciled``: every input row is accounted for (else a bug: raise)."""
    accounted = (counts["train_rows"] + counts["valid_rows"] + counts["quarantined"] + counts["duplicates_dropped"]
                 + counts["removed_min_user"] + counts["removed_min_item"] + counts["cold_start_dropped"])
    counts["reconciled"] = accounted == counts["input_rows"]
    if not counts["reconciled"]:
        # A bug, not bad input: rows vanished somewhere between steps.
        raise RuntimeError(f"prepare counts do not reconcile: {counts}")
    return counts


def _indexed_split(kept: DataFrame):
    """(users, items, train, valid): the id maps, and the rows with indices split by ``is_valid``."""
    users = build_index(kept, "user_id", "user_idx").persist()
    items = build_index(kept, "item_id", "item_idx").persist()
    indexed = apply_index(apply_index(kept, users, "user_id", "user_idx"), items, "item_id", "item_idx")
    train, valid = split_frames(indexed.select(
        F.col("user_idx").cast("int"), F.col("item_idx").cast("int"), F.col("rating").cast("float"),
        F.col("user_id").cast("int"), F.col("item_id").cast("int"), F.col("timestamp").cast("long"),
        "is_valid", "is_cold"))
    return users, items, train, valid


def prepare_ratings(raw: DataFrame, cfg: PrepareConfig) -> Prepared:
    """Clean, deduplicate, filter, split and index raw ratings.

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
    classified, quarantine, by_reason, n_good = classify_input(raw, cfg)
    n_bad = sum(by_reason.values())
    n_input = n_good + n_bad

    deduped = drop_duplicates_latest(good_rows(classified)).persist()
    n_deduped = deduped.count()
    by_user = filter_min_counts(deduped, "user_id", cfg.min_user_ratings).persist()
    n_by_user = by_user.count()
    by_item = filter_min_counts(by_user, "item_id", cfg.min_item_ratings)

    flagged = cold_start_rows(split_rows(by_item, cfg.split, cfg.valid_fraction, cfg.seed))
    kept = apply_cold_start(flagged, cfg.cold_start).persist()
    summary = kept.agg(F.count(F.lit(1)).alias("n"),
                       F.sum(F.col("is_valid").cast("int")).alias("valid"),
                       F.sum(F.col("is_cold").cast("int")).alias("cold")).first()
    n_kept, n_valid, n_cold_kept = summary["n"], summary["valid"] or 0, summary["cold"] or 0
    n_by_item = by_item.count()
    if n_kept == 0:
        raise InputError(f"{cfg.input}: no ratings left after cleaning and minimum counts")

    users, items, train, valid = _indexed_split(kept)
    counts = _reconciled({
        "input_rows": n_input,
        "quarantined": n_bad,
        "quarantined_by_reason": dict(sorted(by_reason.items())),
        "duplicates_dropped": n_good - n_deduped,
        "removed_min_user": n_deduped - n_by_user,
        "removed_min_item": n_by_user - n_by_item,
        "cold_start_rows": n_cold_kept if cfg.cold_start != "drop" else n_by_item - n_kept,
        "cold_start_policy": cfg.cold_start,
        "cold_start_dropped": n_by_item - n_kept,
        "train_rows": n_kept - n_valid,
        "valid_rows": n_valid,
        "n_users": users.count(),
        "n_items": items.count(),
    })
    deduped.unpersist()
    by_user.unpersist()
    return Prepared(train=train, valid=valid, users=users, items=items, quarantine=quarantine, counts=counts,
                    cached=[classified, kept, users, items])


def build_meta(prepared: Prepared, cfg: PrepareConfig, input_info: Dict[str, Any]) -> Dict[str, Any]:
    """The ``meta.json`` that ties a prepare output to its input, config and versions."""
    counts = prepared.counts
    return {
        "n_users": counts["n_users"],
        "n_items": counts["n_items"],
        "counts": counts,
        "rating": {"min": cfg.rating_min, "max": cfg.rating_max, "step": cfg.rating_step},
        "split": {"method": cfg.split, "valid_fraction": cfg.valid_fraction, "seed": cfg.seed,
                  "cold_start": cfg.cold_start},
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
    key = F.xxhash64("user_idx", "item_idx", F.lit(int(seed) + 1))
    return frame.repartitionByRange(files, key).sortWithinPartitions(key)


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

"""The prepare stage: raw ratings -> clean, indexed, split frames, and how to write them.

``prepare_ratings`` chains the cleaning of :mod:`cfmodel.ingest.clean`,
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
from typing import Any, Dict, List, Tuple

import pyarrow
import pyspark
from pyspark.sql import DataFrame
from pyspark.sql import functions as F

import cfmodel
from cfmodel.ingest.clean import clean_input
from cfmodel.ingest.rules import filter_min_counts
from cfmodel.config import PrepareConfig
from cfmodel.dataset import PREPARED_FORMAT
from cfmodel.errors import InputError
from cfmodel.prepare.index import apply_index, build_index
from cfmodel.ingest.infer import split_cutoff
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
        Text ratings as :func:`cfmodel.ingest.source.read_ratings` returns them.
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
    kept = apply_cold_start(flagged, cfg.valid_cold_start).persist()
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
        "cold_start_rows": n_cold_kept if cfg.valid_cold_start != "drop" else n_by_item - n_kept,
        "cold_start_policy": cfg.valid_cold_start,
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
        "format_version": PREPARED_FORMAT,
        "n_users": counts["n_users"],
        "n_items": counts["n_items"],
        "counts": counts,
        "feedback": prepared.feedback,
        "rating": prepared.scale,
        "id_types": {"user": prepared.id_types[0], "item": prepared.id_types[1]},
        "split": {"method": cfg.split, "valid_fraction": cfg.valid_fraction, "seed": cfg.seed,
                  "cold_start": cfg.valid_cold_start, "split_time": cfg.split_time},
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

"""What prepare reads off the data rather than the config: each id column's type, the rating scale
(each bound or step left null), and ``prepare.split_time`` read as timestamps are read."""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from cfmodel.config import PrepareConfig
from cfmodel.errors import ConfigError
from cfmodel.ingest.rules import detect_id_types, epoch_seconds

# Steps a scale left null may be inferred as: the largest that every rating is a whole multiple of.
STEP_CANDIDATES = (1.0, 0.5, 0.25, 0.2, 0.1, 0.05, 0.01)
# prepare.id_type auto: each id column's type is read off this many of the input's first rows.
ID_SAMPLE_ROWS = 100_000


def id_types_of(raw: DataFrame, cfg: PrepareConfig) -> Tuple[str, str]:
    """(users, items) id types: ``prepare.id_type``, or for ``auto`` each column's from a sample
    (:func:`cfmodel.ingest.rules.detect_id_types`, up to ``max_quarantine_fraction`` of it off type)."""
    if cfg.id_type != "auto":
        return cfg.id_type, cfg.id_type
    return detect_id_types(raw, ID_SAMPLE_ROWS, cfg.max_quarantine_fraction)


def rating_scale(good: Any, cfg: PrepareConfig, feedback: str) -> Dict[str, Any]:
    """The rating scale: the configured bounds and step, each left null inferred from the good pairs (for
    events, the counts' or weights' range). ``inferred`` names the keys that came from the data."""
    observed = {"min": good["low"], "max": good["high"],
                "step": next((c for i, c in enumerate(STEP_CANDIDATES) if (good[f"off_{i}"] or 0) < 1e-6), None)}
    named = {} if feedback == "implicit" else {"min": cfg.rating_min, "max": cfg.rating_max, "step": cfg.rating_step}
    scale = {k: named[k] if named.get(k) is not None else observed[k] for k in ("min", "max", "step")}
    return {**scale, "inferred": [k for k in ("min", "max", "step") if named.get(k) is None]}


def split_cutoff(spark: SparkSession, cfg: PrepareConfig) -> Optional[int]:
    """``prepare.split_time`` in epoch seconds, read as prepare reads timestamps (None when unset)."""
    if cfg.split_time is None:
        return None
    text = str(cfg.split_time).strip()
    frame = spark.createDataFrame([(text,)], "t string").select(
        epoch_seconds("t", F.expr("try_cast(t AS bigint)")).alias("s"))
    seconds = frame.first()["s"]
    if seconds is None:
        raise ConfigError(f"prepare.split_time={cfg.split_time!r} is not a time (epoch seconds or milliseconds, "
                          f"or ISO 8601 such as 2016-06-01T00:00:00Z)")
    return int(seconds)

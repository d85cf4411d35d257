"""Cleaning rules for raw ratings: pure DataFrame -> DataFrame transforms.

Each raw row either parses into ``user_id, item_id, rating, timestamp`` or gets a
``reason`` (the first rule it breaks) and goes to quarantine. Duplicate
(user, item) pairs keep their latest rating; optional minimum counts drop
rarely seen users and items. Every row removed is counted by the caller.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Tuple

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from cfmodel.ingest.source import CORRUPT

INT32_MAX = 2_147_483_647
# A plain decimal number; rejects NaN, Infinity, hex and empty strings.
NUMBER = r"^[+-]?([0-9]+(\.[0-9]*)?|\.[0-9]+)([eE][+-]?[0-9]+)?$"

# Quarantine reasons, in the order the rules are checked (the weight's for events, the rating's otherwise).
REASONS = ("malformed_row", "missing_user", "missing_item", "missing_rating", "missing_weight",
           "missing_timestamp", "bad_user_id", "bad_item_id", "bad_rating", "bad_weight", "rating_out_of_range",
           "rating_off_step", "bad_timestamp")
# A timestamp number at or above this is in milliseconds (as seconds it would be after the year 5000).
EPOCH_MS_FROM = 100_000_000_000
LARGEST = 1.7976931348623157e308  # the largest double: Infinity and NaN compare above it in Spark


@dataclass(frozen=True)
class RatingRule:
    """The valid rating scale: ``minimum..maximum`` (None: unbounded, the scale is then inferred from the
    data) in steps of ``step`` from ``minimum`` (or from 0). For ``implicit`` feedback the rating column
    holds an optional weight (``weighted``): a non-negative number, summed per pair."""

    minimum: Optional[float]
    maximum: Optional[float]
    step: Optional[float]
    require_timestamp: bool = True
    feedback: str = "explicit"
    weighted: bool = False

    @property
    def low(self) -> float:
        return -LARGEST if self.minimum is None else self.minimum

    @property
    def high(self) -> float:
        return LARGEST if self.maximum is None else self.maximum


# What Java's regex \s matches: a trim, not a regex replace, which cost a third of the parse at 20M rows.
WHITESPACE = " \t\n\x0b\f\r"


def _stripped(name: str) -> Column:
    # Strips \r left by odd line endings and stray spaces around values.
    return F.btrim(F.col(name), F.lit(WHITESPACE))


def _blank(col: Column) -> Column:
    return col.isNull() | (col == "")


def _try_cast(name: str, to: str) -> Column:
    # Null where the text does not parse, even under spark.sql.ansi.enabled (where cast would fail the job).
    return F.expr(f"try_cast(`{name}` AS {to})")


def _id_ok(text: Column, value: Column) -> Column:
    # True where trimmed text is an id in 1..2**31-1; value: the text cast to long, computed by the caller.
    return _all_digits(text, value, 10) & (value >= 1) & (value <= INT32_MAX)


def _all_digits(text: Column, value: Column, max_digits: int) -> Column:
    """True where ``text`` is 1 to ``max_digits`` decimal digits; ``value``: ``text`` cast to long.

    Arithmetic vouches for the usual text (a value of exactly ``len(text)`` digits has no sign, dot,
    space or leading zero), and the regex decides the rest: run on every row, the four regexes took
    4-6 s of the 13 s that classifying 20M ratings took."""
    length = F.length(text)
    canonical = (length <= max_digits) & (value >= F.pow(F.lit(10), length - 1).cast("long"))
    return F.when(canonical, F.lit(True)).otherwise(text.rlike(f"^[0-9]{{1,{max_digits}}}$"))


def _number(text: Column, value: Column, rule: "RatingRule") -> Column:
    """True where ``text`` is a plain decimal number (:data:`NUMBER`); ``value``: ``text`` cast to double.
    Text that reads back as Spark writes the value, in range (so neither NaN nor infinite), needs no regex."""
    canonical = (value.cast("string") == text) & (value >= rule.low) & (value <= rule.high)
    return F.when(canonical, F.lit(True)).otherwise(text.rlike(NUMBER))


def epoch_seconds(name: str, value: Column) -> Column:
    """Seconds since the epoch from trimmed text: a whole number (seconds, or milliseconds from
    :data:`EPOCH_MS_FROM`), an ISO-8601 date or time, or a Parquet timestamp read as text (no offset:
    the session's time zone); null where none parses. ``name``: the trimmed text column; ``value``: it
    cast to long."""
    text = F.col(name)
    whole = F.when(value >= EPOCH_MS_FROM, F.floor(value / 1000)).otherwise(value).cast("long")
    iso = F.unix_timestamp(_try_cast(name, "timestamp"))
    return F.when(_all_digits(text, value, 18), whole).otherwise(iso)


def _value_checks(rating: Column, value: Column, rule: RatingRule) -> list:
    """(condition, reason) for the rating column: an explicit rating's scale, or an event's weight."""
    if rule.feedback == "implicit":
        if not rule.weighted:
            return []
        return [(_blank(rating), "missing_weight"), (~_number(rating, value, rule) | (value < 0), "bad_weight")]
    checks = [(_blank(rating), "missing_rating"), (~_number(rating, value, rule), "bad_rating"),
              ((value < rule.low - 1e-9) | (value > rule.high + 1e-9), "rating_out_of_range")]
    if rule.step is not None:
        steps = (value - (rule.minimum or 0.0)) / rule.step
        checks.append((F.abs(steps - F.round(steps)) > 1e-6, "rating_off_step"))
    return checks


# How each id type is stored: int keeps MovieLens' int32 ids exactly as before; long is any 64-bit integer;
# string is the trimmed text (SKUs, UUIDs, tt0114709).
ID_SQL_TYPES = {"int": "int", "long": "bigint", "string": "string"}


def id_check(text: Column, value: Column, id_type: str) -> Column:
    """True where trimmed ``text`` is an id of ``id_type`` (``value``: it cast to long)."""
    if id_type == "int":
        return _id_ok(text, value)
    if id_type == "long":
        return value.isNotNull() & text.rlike("^[+-]?[0-9]{1,19}$")
    return F.lit(True)  # any text that is not blank (blank ids are missing_user/missing_item first)


def _id_value(text: Column, value: Column, id_type: str) -> Column:
    return text if id_type == "string" else value.cast(ID_SQL_TYPES[id_type])


def classify(raw: DataFrame, rule: RatingRule, id_types: Tuple[str, str] = ("int", "int")) -> DataFrame:
    """Parse raw text ratings and give each row that breaks a rule its ``reason``.

    Parameters
    ----------
    raw
        Columns ``user, item, rating, timestamp`` (strings) and ``_corrupt_record``,
        as :func:`cfmodel.ingest.source.read_ratings` makes them.
    rule
        The rating scale.
    id_types
        (users, items): ``int`` (positive int32, MovieLens'), ``long`` or ``string``.

    Returns
    -------
    DataFrame
        The raw columns plus ``user_id, item_id`` (of ``id_types``), ``rating_value double,
        ts long`` and ``reason`` (null for a good row).
    """
    stripped = raw.select("*", *[_stripped(c).alias(f"_{c}") for c in ("user", "item", "rating", "timestamp")])
    user, item, rating, ts = (F.col(f"_{c}") for c in ("user", "item", "rating", "timestamp"))
    # Each text parsed once, in its own projection: the checks and the output read the numbers.
    parsed = stripped.select("*", *[_try_cast(f"_{c}", to).alias(f"_{c}_n") for c, to in (
        ("user", "bigint"), ("item", "bigint"), ("rating", "double"), ("timestamp", "bigint"))])
    user_n, item_n, value, ts_n = (F.col(f"_{c}_n") for c in ("user", "item", "rating", "timestamp"))
    ts_value = epoch_seconds("_timestamp", ts_n)
    value_checks = _value_checks(rating, value, rule)
    checks = [
        (F.col(CORRUPT).isNotNull(), "malformed_row"),
        (_blank(user), "missing_user"),
        (_blank(item), "missing_item"),
        *[(c, r) for c, r in value_checks if r.startswith("missing")],
        (F.lit(rule.require_timestamp) & _blank(ts), "missing_timestamp"),
        (~id_check(user, user_n, id_types[0]), "bad_user_id"),
        (~id_check(item, item_n, id_types[1]), "bad_item_id"),
        *[(c, r) for c, r in value_checks if not r.startswith("missing")],
        (~_blank(ts) & ts_value.isNull(), "bad_timestamp"),
    ]
    reason = F.lit(None).cast("string")
    for condition, name in reversed(checks):
        reason = F.when(condition, F.lit(name)).otherwise(reason)
    with_reason = parsed.withColumn("reason", reason)
    good = F.col("reason").isNull()
    return with_reason.select(
        *raw.columns,
        F.when(good, _id_value(user, user_n, id_types[0])).alias("user_id"),
        F.when(good, _id_value(item, item_n, id_types[1])).alias("item_id"),
        F.when(good, _rating_value(value, rule)).alias("rating_value"),
        F.when(good, ts_value).alias("ts"),
        "reason",
    )


def _rating_value(value: Column, rule: RatingRule) -> Column:
    # An unweighted event counts 1.
    return F.lit(1.0) if rule.feedback == "implicit" and not rule.weighted else value


def detect_id_types(raw: DataFrame, sample_rows: int, tolerance: float) -> Tuple[str, str]:
    """(users, items): for each id column the narrowest type (``int``, ``long``, ``string``) that all but
    ``tolerance`` (a share) of the non-blank ids among the input's first ``sample_rows`` rows fit; ``int``
    when there are none. One Spark job reads the sample. The rest is held to the type found: an id of
    another shape is quarantined as a bad id (so a few stray ids in MovieLens-style data are quarantined as
    before, while ids that are mostly text make the column text), and the gate's message names
    ``prepare.id_type``."""
    sample = raw.select(_stripped("user").alias("u"), _stripped("item").alias("i")).limit(sample_rows)
    shares = []
    for c in ("u", "i"):
        text, value = F.col(c), _try_cast(c, "bigint")
        present = F.when(~_blank(text), F.lit(1))
        shares += [F.sum(present).alias(f"{c}_n"),
                   F.sum(F.when(~_blank(text) & _id_ok(text, value), 1)).alias(f"{c}_int"),
                   F.sum(F.when(~_blank(text) & id_check(text, value, "long"), 1)).alias(f"{c}_long")]
    row = sample.agg(*shares).first()

    def kind(c: str) -> str:
        n = row[f"{c}_n"] or 0
        for name in ("int", "long"):
            if (row[f"{c}_{name}"] or 0) >= (1.0 - tolerance) * n:
                return name
        return "string"

    return kind("u"), kind("i")


def bad_rows(classified: DataFrame) -> DataFrame:
    """Rows that broke a rule, with their raw text, ``reason`` and source file."""
    return classified.where(F.col("reason").isNotNull()).select(
        "user", "item", "rating", "timestamp", F.col(CORRUPT).alias("raw_line"), "_source_file", "reason")


def latest_by_pair(classified: DataFrame) -> DataFrame:
    """One row per good (user_id, item_id) pair, keeping its latest rating (the latest timestamp, a null one
    losing, then the highest rating), and one per quarantine reason; each with ``n``, the input rows it
    stands for.

    Returns ``user_id, item_id, reason, rating, timestamp, n``: a reason's row has null ids and values. One
    aggregation (the greatest ``(timestamp, rating)`` pair per key, nulls ordered first) counts the good
    rows, the pairs and the rows of each reason exactly (task retries included, unlike an accumulator), so
    the input is read once for all three; an aggregation rather than a window, so the result does not
    depend on partitioning.
    """
    keys = ["user_id", "item_id", "reason"]
    rows = classified.select("user_id", "item_id", F.col("rating_value").alias("rating"),
                             F.col("ts").alias("timestamp"), "reason")
    latest = F.max(F.struct("timestamp", "rating")).alias("_latest")
    return (rows.groupBy(*keys).agg(latest, F.count(F.lit(1)).alias("n"))
            .select(*keys, F.col("_latest.rating").alias("rating"), F.col("_latest.timestamp").alias("timestamp"),
                    "n"))


def events_by_pair(classified: DataFrame) -> DataFrame:
    """Implicit feedback: one row per good (user_id, item_id) pair with ``rating`` its summed weight (its
    event count when unweighted) and ``timestamp`` its latest event, and one per quarantine reason; the
    columns and ``n`` (the input rows each stands for) as :func:`latest_by_pair` gives them."""
    keys = ["user_id", "item_id", "reason"]
    return (classified.groupBy(*keys)
            .agg(F.sum("rating_value").alias("rating"), F.max("ts").alias("timestamp"), F.count(F.lit(1)).alias("n"))
            .select(*keys, "rating", "timestamp", "n"))


def filter_min_counts(ratings: DataFrame, column: str, minimum: int) -> DataFrame:
    """Drop rows whose ``column`` value has fewer than ``minimum`` ratings."""
    if minimum <= 1:
        return ratings
    counts = ratings.groupBy(column).count().where(F.col("count") >= minimum).select(column)
    return ratings.join(counts, on=column, how="left_semi")

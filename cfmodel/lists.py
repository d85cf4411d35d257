"""Top-N lists on Spark, one floor below the stages that make them (score's exports, evaluate's model and
baseline lists): broadcast the item table, score users partition by partition.

The driver reads the (small) item factors, checks their size against
``score.broadcast_max_mb`` and broadcasts them with the fallback ranking. Users
stay distributed: each partition is scored in blocks of ``block_size`` users by
:class:`cfmodel.model.topn.BlockScorer` inside ``mapInArrow`` (one matrix product and
one top-k per block), so there is never a users × items cross join and a
task's memory is bounded by ``block_size × n_items`` scores.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql import types as T

from cfmodel.config import ScoreConfig
from cfmodel.dataset import PreparedData
from cfmodel.errors import InputError
from cfmodel.model import CFModule, TrainedModel
from cfmodel.model.factors import id_type_of
from cfmodel.model.by_id import by_bias
from cfmodel.model.topn import BlockScorer, ItemTable
from cfmodel.ingest.rules import id_check
from cfmodel.storage import Storage

SPARK_ID_TYPES = {"int": T.IntegerType(), "long": T.LongType(), "string": T.StringType()}


def output_schema(user_type: T.DataType = T.IntegerType(), item_type: T.DataType = T.IntegerType()) -> T.StructType:
    """Long-form lists: ``user_id, rank, item_id, score, fallback``, the ids in their own types."""
    return T.StructType([
        T.StructField("user_id", user_type, False),
        T.StructField("rank", T.IntegerType(), False),
        T.StructField("item_id", item_type, False),
        T.StructField("score", T.FloatType(), False),
        T.StructField("fallback", T.BooleanType(), False),
    ])


OUTPUT_SCHEMA = output_schema()  # MovieLens' int32 ids


@dataclass
class ScoreInputs:
    """A trained model, its factor tables and the prepare output it was trained on.

    ``list_user_factors``/``list_item_factors`` are what top-N lists are made
    from: the ranking head's tables for a model that has one, else the same
    frames as ``user_factors``/``item_factors`` (which predict ratings).
    """

    model: TrainedModel
    user_factors: DataFrame
    item_factors: DataFrame
    users: DataFrame
    items: DataFrame
    list_user_factors: Optional[DataFrame] = None
    list_item_factors: Optional[DataFrame] = None
    new_items: int = 0  # movies folded in at scoring time, indexed after the model's

    def __post_init__(self) -> None:
        if self.list_user_factors is None:
            self.list_user_factors, self.list_item_factors = self.user_factors, self.item_factors


def load_inputs(spark: SparkSession, storage: Storage, cfg: ScoreConfig) -> ScoreInputs:
    """Read the model and prepare outputs, checking that they belong together.

    ``cfg`` is any config section with ``model`` and ``data`` (score, evaluate).

    Raises
    ------
    InputError
        A ``meta.json`` or ``model.pt`` is missing, or the model was trained on
        another prepare output (another input SHA-256), so its indices would not match.
    """
    if not storage.exists(f"{cfg.model}/meta.json"):
        raise InputError(f"not found: {cfg.model}/meta.json")
    if not storage.exists(f"{cfg.model}/_SUCCESS"):
        raise InputError(f"{cfg.model}: no _SUCCESS; the train output is incomplete (a crashed or unfinished "
                         f"write): rerun train")
    trained = storage.read_json(f"{cfg.model}/meta.json")
    data = PreparedData(cfg.data, storage)
    if trained["data"]["input_sha256"] != data.input_sha256:
        raise InputError(f"model {cfg.model} was trained on another prepare output than {cfg.data} "
                         f"(input sha256 {trained['data']['input_sha256'][:12]} vs "
                         f"{data.input_sha256[:12]}); their indices do not match")
    model = TrainedModel.read(storage, cfg.model)
    lists = "rank_" if model.module.has_rank_head else ""
    for table in {"user_factors", "item_factors", f"{lists}user_factors", f"{lists}item_factors"}:
        if not storage.exists(f"{cfg.model}/{table}"):
            raise InputError(f"{cfg.model}: no {table}/; the train output is damaged: rerun train")
    return ScoreInputs(model, spark.read.parquet(f"{cfg.model}/user_factors"),
                       spark.read.parquet(f"{cfg.model}/item_factors"), data.frame(spark, "users"),
                       data.frame(spark, "items"), spark.read.parquet(f"{cfg.model}/{lists}user_factors"),
                       spark.read.parquet(f"{cfg.model}/{lists}item_factors"))


def build_scorer(inputs: ScoreInputs, cfg: ScoreConfig) -> BlockScorer:
    """The broadcastable scorer: item table (size-checked), fallback ranking, the model's list head."""
    args, head = inputs.model.args, inputs.model.list_head()
    table = item_table(inputs.list_item_factors, inputs.items, cfg,
                       (args.n_items + inputs.new_items, args.n_factors + (args.rank_factors or 0)))
    mean_user_bias = inputs.list_user_factors.agg(F.avg("bias")).first()[0] or 0.0
    fallback_idx, fallback_score = fallback_ranking(table, inputs.items, cfg.fallback, mean_user_bias, head)
    return BlockScorer(table, fallback_idx, fallback_score, cfg.top_n, head, cfg.block_size, cfg.torch_threads)


def check_broadcast_size(n_items: int, n_factors: int, limit_mb: int) -> int:
    """Bytes the item table will take; raises before anything is collected if over the limit."""
    size = n_items * (n_factors * 4 + 4 + 8 + 1)
    if size > limit_mb * 2**20:
        raise InputError(f"item table of {n_items} items x {n_factors} factors is {size / 2**20:.0f} MiB, over "
                         f"score.broadcast_max_mb={limit_mb}; raise the limit (and executor memory) or filter items")
    return size


def item_table(item_factors: DataFrame, items: DataFrame, cfg: ScoreConfig,
               shape: Optional[Tuple[int, int]] = None) -> ItemTable:
    """Collect the item factors (after the size check) with their candidate mask.

    ``items`` is the prepare job's ``items/`` map (for ``min_candidate_ratings``).
    ``shape`` (items, factors), when the trained model gives it, saves the
    Spark job that otherwise counts them for the size check; the collected
    table must then match it.
    """
    if shape is None:
        row = item_factors.agg(F.count(F.lit(1)).alias("n"), F.max(F.size("features")).alias("k")).first()
        shape = (row["n"], row["k"] or 0)
    if not shape[0]:
        raise InputError("item_factors is empty")
    check_broadcast_size(shape[0], shape[1], cfg.broadcast_max_mb)
    pdf = item_factors.select("id", "idx", "bias", "features").toPandas().sort_values("idx", ignore_index=True)
    lengths = pdf["features"].map(lambda f: -1 if f is None else len(f))
    if len(pdf) != shape[0] or (lengths != shape[1]).any():
        raise InputError(f"item_factors holds {len(pdf)} rows of {sorted(set(lengths))} factors; the model "
                         f"says {shape[0]} items x {shape[1]} factors (a null features list shows as -1)")
    counts = items.select(F.col("item_id").alias("id"), "n_ratings").toPandas()
    pdf = pdf.merge(counts, on="id", how="left")
    if not np.array_equal(pdf["idx"].to_numpy(), np.arange(len(pdf))):
        raise InputError("item_factors idx is not contiguous from 0")
    candidate = pdf["n_ratings"].fillna(0).to_numpy() >= cfg.min_candidate_ratings
    if cfg.exclude_items:
        ids = pdf["id"].to_numpy()
        excluded = [str(i) for i in cfg.exclude_items] if id_type_of(ids) == "string" else cfg.exclude_items
        candidate &= ~np.isin(ids, np.asarray(excluded, dtype=ids.dtype))
    return ItemTable(
        ids=pdf["id"].to_numpy(),
        factors=np.stack(pdf["features"].to_numpy()).astype(np.float32),
        bias=pdf["bias"].fillna(0.0).to_numpy(dtype=np.float32),
        candidate=candidate)


def fallback_ranking(table: ItemTable, items: DataFrame, how: str, mean_user_bias: float, head: CFModule):
    """(item indices best first, score per item) for users without factors.

    ``bias``: highest item bias, scored by the model (``head``) as for an
    average user with zero factors (models without biases fall back to
    ``popular``). ``popular``: most rated, scored by the item's mean rating.
    """
    if how == "bias" and np.any(table.bias):
        order, score = by_bias(head, table.bias, mean_user_bias)
    else:
        stats = items.orderBy("item_idx").select("n_ratings", "mean_rating").toPandas()
        score = stats["mean_rating"].to_numpy(dtype=np.float32)
        count = stats["n_ratings"].to_numpy(dtype=np.float64)
        order = np.lexsort((np.arange(len(count)), -count))  # ties: lower index first
    order = order[table.candidate[order]]
    return order.astype(np.int64), score.astype(np.float32)


def seen_items(prepared: str, spark: SparkSession, include_valid: bool) -> DataFrame:
    """``user_idx, seen array<int>``: the items each user has rated (train, and valid if asked)."""
    data = PreparedData(prepared)  # checked whole by load_inputs, which a stage calls first
    rated = spark.read.parquet(data.part("train")).select("user_idx", "item_idx")
    if include_valid:
        rated = rated.unionByName(spark.read.parquet(data.part("valid")).select("user_idx", "item_idx"))
    return collect_seen(rated)


def collect_seen(rated: DataFrame) -> DataFrame:
    """``user_idx, seen array<int>`` from rating rows (``user_idx, item_idx``)."""
    return rated.groupBy("user_idx").agg(F.collect_list("item_idx").alias("seen"))


def users_to_score(user_factors: DataFrame, users: DataFrame, seen: DataFrame,
                   subset: Optional[DataFrame] = None) -> DataFrame:
    """``user_id, features, bias, seen`` for every user to score.

    All users of the prepare output and of the model, or only ``subset``
    (a frame with ``user_id``); a user without factors gets nulls (fallback).
    """
    known = users.select("user_id", "user_idx")
    factors = user_factors.select(F.col("id").alias("user_id"), "features", "bias")
    everyone = (known.join(factors, "user_id", "full_outer") if subset is None
                else subset.select(F.col("user_id").cast(known.schema["user_id"].dataType)).distinct()
                .join(known, "user_id", "left").join(factors, "user_id", "left"))
    return everyone.join(seen, "user_idx", "left").select("user_id", "features", "bias", "seen")


def read_user_list(spark: SparkSession, path: str, user_col: str, id_type: T.DataType = T.IntegerType()) -> DataFrame:
    """``user_id`` (of ``id_type``: the users map's) from a CSV (header with ``user_col``, or one column) or
    Parquet file of ids."""
    if not Storage(spark).exists(path):
        raise InputError(f"user list not found: {path} (score.users)")
    frame = (spark.read.parquet(path) if path.rstrip("/").endswith(".parquet")
             else spark.read.option("header", True).csv(path))
    column = user_col if user_col in frame.columns else (frame.columns[0] if len(frame.columns) == 1 else None)
    if column is None:
        raise InputError(f"{path}: user list needs a '{user_col}' column (or a single column); found {frame.columns}")
    ids = frame.select(F.trim(F.col(f"`{column}`").cast("string")).alias("raw"))
    # The same id rule as the prepare job's cleaning; a blank cell is no id either.
    kind = next(k for k, v in SPARK_ID_TYPES.items() if v == id_type)
    value = F.expr("try_cast(raw AS bigint)")
    bad = ids.where(F.col("raw").isNull() | (F.col("raw") == "") | ~id_check(F.col("raw"), value, kind)).first()
    if bad is not None:
        what = {"int": "a positive int32", "long": "a 64-bit integer", "string": "an id"}[kind]
        raise InputError(f"{path}: user id {bad['raw']!r} in column '{column}' is not {what} (the model's "
                         f"user ids are {kind})")
    return ids.select(F.col("raw").cast(id_type).alias("user_id"))


def recommend(frame: DataFrame, scorer: BlockScorer, spark: SparkSession, partitions: int = 0) -> DataFrame:
    """Long-form recommendations (``OUTPUT_SCHEMA``) for the users in ``frame``.

    Users are dealt round-robin into ``partitions`` equal tasks (0: Spark's
    default parallelism, one task per core: a second wave of equal tasks only
    adds each task's fixed cost); an explicit count, because adaptive execution
    would otherwise coalesce the small user table into one task and leave
    cores idle.
    """
    shared = spark.sparkContext.broadcast(scorer)
    frame = frame.repartition(partitions or spark.sparkContext.defaultParallelism)

    def score_partition(batches):
        block_scorer = shared.value
        for batch in batches:
            yield block_scorer.score_batch(batch)

    schema = output_schema(frame.schema["user_id"].dataType, SPARK_ID_TYPES[id_type_of(scorer.items.ids)])
    return frame.mapInArrow(score_partition, schema=schema)


def nested(long: DataFrame, user_col: str, item_col: str) -> DataFrame:
    """ALS's ``recommendForAllUsers`` form: ``user, recommendations: array<struct<item, rating>>``."""
    ranked = F.array_sort(F.collect_list(F.struct("rank", F.col("item_id").alias(item_col),
                                                  F.col("score").alias("rating"))))
    return (long.groupBy(F.col("user_id").alias(user_col))
            .agg(ranked.alias("_r"))
            .select(user_col, F.transform("_r", lambda r: F.struct(r[item_col].alias(item_col),
                                                                   r["rating"].alias("rating")))
                    .alias("recommendations")))


def output_frames(long: DataFrame, formats: List[str], files: int, user_col: str, item_col: str) -> dict:
    """The frames to write per format, ordered by user (and rank) into ``files`` files."""
    ordered = long.repartitionByRange(files, "user_id").sortWithinPartitions("user_id", "rank")
    out = {}
    if "parquet" in formats:
        out["recommendations"] = ("parquet", ordered)
    if "csv" in formats:
        out["csv"] = ("csv", ordered)
    if {"nested", "jsonl"} & set(formats):
        nest = nested(long, user_col, item_col).repartitionByRange(files, user_col).sortWithinPartitions(user_col)
        if "nested" in formats:
            out["nested"] = ("parquet", nest)
        if "jsonl" in formats:
            out["jsonl"] = ("json", nest)
    return out

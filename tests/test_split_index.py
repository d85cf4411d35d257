"""Hash split and id indexing: deterministic whatever the partitioning."""
import pytest
from pyspark.sql import functions as F

from cfmodel.prepare.index import apply_index, build_index
from cfmodel.prepare.split import apply_cold_start, assign_split, cold_start_rows, split_frames


def _ratings(spark, n_users=200, n_items=50):
    rows = [(u * 7 + 3, i * 13 + 1, float((u + i) % 5 + 1), u * i) for u in range(n_users) for i in range(n_items)
            if (u * 31 + i * 17) % 3 == 0]
    return spark.createDataFrame(rows, "user_id int, item_id int, rating double, timestamp long")


def test_split_fraction_and_same_whatever_partitioning(spark):
    df = _ratings(spark)
    a = {(r.user_id, r.item_id) for r in assign_split(df.repartition(1), 0.2, 7).where("is_valid").collect()}
    b = {(r.user_id, r.item_id) for r in assign_split(df.repartition(7), 0.2, 7).where("is_valid").collect()}
    assert a == b
    n = df.count()
    assert abs(len(a) / n - 0.2) < 0.02, len(a) / n
    other = {(r.user_id, r.item_id) for r in assign_split(df, 0.2, 8).where("is_valid").collect()}
    assert other != a  # the seed matters


def test_index_contiguous_by_id_order_and_partition_independent(spark):
    df = _ratings(spark)
    i1 = build_index(df.repartition(1), "user_id", "user_idx").orderBy("user_idx").collect()
    i2 = build_index(df.repartition(5), "user_id", "user_idx").orderBy("user_idx").collect()
    assert i1 == i2
    assert [r.user_idx for r in i1] == list(range(len(i1)))
    assert [r.user_id for r in i1] == sorted(r.user_id for r in i1)
    first = i1[0]
    expected = df.where(F.col("user_id") == first.user_id).agg(F.count("*"), F.avg("rating")).first()
    assert first.n_ratings == expected[0]
    assert abs(first.mean_rating - expected[1]) < 1e-5


def test_apply_index_keeps_every_row(spark):
    df = _ratings(spark)
    idx = build_index(df, "item_id", "item_idx")
    out = apply_index(df, idx, "item_id", "item_idx")
    assert out.count() == df.count()
    assert out.agg(F.max("item_idx")).first()[0] == idx.count() - 1
    sent = apply_index(df, idx, "item_id", "item_idx", broadcast=True)
    assert "BroadcastHashJoin" in sent._jdf.queryExecution().executedPlan().toString()
    assert sorted(sent.collect()) == sorted(out.collect())


def _cold_frame(spark):
    # user 9 and item 99 appear only in rows forced into validation.
    rows = [(1, 1, True), (1, 2, False), (2, 1, False), (2, 2, True), (9, 1, True), (1, 99, True)]
    return spark.createDataFrame(rows, "user_id int, item_id int, is_valid boolean")


@pytest.mark.slow
@pytest.mark.parametrize("broadcast", [(False, False), (True, True)])
def test_cold_start_policies(spark, broadcast):
    flagged = cold_start_rows(_cold_frame(spark), broadcast=broadcast)
    joins = flagged._jdf.queryExecution().executedPlan().toString()
    # The broadcast form sends the training ids to the tasks (no shuffle of the ratings); results are equal.
    assert ("BroadcastHashJoin" in joins) == broadcast[0]
    cold = {(r.user_id, r.item_id) for r in flagged.where("is_cold").collect()}
    assert cold == {(9, 1), (1, 99)}

    train, valid = split_frames(apply_cold_start(flagged, "train"))
    assert {(r.user_id, r.item_id) for r in valid.collect()} == {(1, 1), (2, 2)}
    assert train.count() == 4

    train, valid = split_frames(apply_cold_start(flagged, "drop"))
    assert (train.count(), valid.count()) == (2, 2)

    train, valid = split_frames(apply_cold_start(flagged, "keep"))
    assert (train.count(), valid.count()) == (2, 4)


def test_per_user_split_holds_out_the_stated_share_of_every_user(spark):
    from cfmodel.prepare.split import assign_split_per_user
    rows = [(u, i, 4.0) for u, n in ((1, 10), (2, 4), (3, 1), (4, 7)) for i in range(100, 100 + n)]
    frame = spark.createDataFrame(rows, "user_id int, item_id int, rating double")
    split = assign_split_per_user(frame, 0.2, seed=7).toPandas()
    held = split.groupby("user_id")["is_valid"].sum().to_dict()
    # round((1 - 0.2) * n) stay in training: 8 of 10, 3 of 4, 1 of 1, 6 of 7.
    assert held == {1: 2, 2: 1, 3: 0, 4: 1}
    again = assign_split_per_user(frame.repartition(3), 0.2, seed=7).toPandas()
    assert (split.sort_values(["user_id", "item_id"])["is_valid"].tolist()
            == again.sort_values(["user_id", "item_id"])["is_valid"].tolist())  # any partitioning
    other = assign_split_per_user(frame, 0.2, seed=8).toPandas()
    assert other.groupby("user_id")["is_valid"].sum().to_dict() == held
    assert set(other[other.is_valid].item_id) != set(split[split.is_valid].item_id)  # the seed picks which


def test_relevance_threshold_null_counts_every_held_out_rating(spark):
    from cfmodel.evaluate.metrics import relevant_items
    held = spark.createDataFrame([(1, 10, 5.0), (1, 11, 1.0), (2, 12, 2.0)], "user_id int, item_id int, rating double")
    strict = {r.user_id: sorted(r.relevant) for r in relevant_items(held, 4.0).collect()}
    every = {r.user_id: sorted(r.relevant) for r in relevant_items(held, None).collect()}
    assert strict == {1: [10.0]} and every == {1: [10.0, 11.0], 2: [12.0]}

"""Metrics against hand-computed small cases, on real Spark."""
import math

import pytest

from cfmodel.errors import InputError
from cfmodel.evaluate.metrics import catalogue_coverage, ranking_metrics, rating_metrics, relevant_items


def test_rating_metrics_by_hand(spark):
    frame = spark.createDataFrame([(4.0, 3.5), (3.0, 3.0), (5.0, 4.0)], "rating double, prediction double")
    m = rating_metrics(frame)
    assert m["n"] == 3
    assert m["mse"] == pytest.approx((0.25 + 0 + 1) / 3)
    assert m["rmse"] == pytest.approx(math.sqrt((0.25 + 0 + 1) / 3))
    assert m["mae"] == pytest.approx(0.5)


def test_rating_metrics_refuse_missing_predictions_and_empty_input(spark):
    with pytest.raises(InputError, match="1 of 2 rows have no prediction"):
        rating_metrics(spark.createDataFrame([(4.0, 3.5), (3.0, None)], "rating double, prediction double"))
    with pytest.raises(InputError, match="no rows"):
        rating_metrics(spark.createDataFrame([], "rating double, prediction double"))


@pytest.fixture
def ranking_case(spark):
    # Held-out ratings; threshold 4 makes relevant: u1 {20, 40}, u2 {5}, u3 {7}; u4 has none (3.0 only).
    held_out = spark.createDataFrame(
        [(1, 20, 4.5), (1, 40, 4.0), (1, 50, 2.0), (2, 5, 5.0), (3, 7, 4.0), (4, 9, 3.0)],
        "user_id int, item_id int, rating double")
    # Lists: u1 [10, 20, 30], u2 [5, 6] (shorter than k), u3 none at all, u4 [9].
    recs = spark.createDataFrame(
        [(1, 3, 30), (1, 1, 10), (1, 2, 20), (2, 1, 5), (2, 2, 6), (4, 1, 9)],
        "user_id int, rank int, item_id int")
    return held_out, recs


def test_relevant_items_apply_the_threshold(ranking_case):
    held_out, _ = ranking_case
    got = {r.user_id: sorted(r.relevant) for r in relevant_items(held_out, 4.0).collect()}
    assert got == {1: [20.0, 40.0], 2: [5.0], 3: [7.0]}


def test_ranking_metrics_by_hand(ranking_case):
    held_out, recs = ranking_case
    m = ranking_metrics(recs, relevant_items(held_out, 4.0), k=3)
    assert m["users"] == 3  # u4 has nothing relevant; u3 counts with an empty list
    # precision@3: u1 1/3, u2 1/3 (divided by k even for a shorter list), u3 0.
    assert m["precision"] == pytest.approx((1 / 3 + 1 / 3 + 0) / 3)
    # recall@3: u1 1/2, u2 1/1, u3 0.
    assert m["recall"] == pytest.approx((0.5 + 1 + 0) / 3)
    # NDCG@3: u1 hit at rank 2 -> (1/log2 3) / (1 + 1/log2 3); u2 hit at rank 1 -> 1.
    u1 = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert m["ndcg"] == pytest.approx((u1 + 1 + 0) / 3)
    # MAP@3: u1 precision 1/2 at its hit, over min(2, 3) relevant -> 1/4; u2 1.
    assert m["map"] == pytest.approx((0.25 + 1 + 0) / 3)


def test_ranking_metrics_respect_k(ranking_case):
    held_out, recs = ranking_case
    m = ranking_metrics(recs, relevant_items(held_out, 4.0), k=1)
    # Only rank 1 counts: u1's 10 misses, u2's 5 hits.
    assert m["precision"] == pytest.approx(1 / 3)
    assert m["recall"] == pytest.approx(1 / 3)


def test_ranking_metrics_need_a_relevant_user(ranking_case):
    held_out, recs = ranking_case
    with pytest.raises(InputError, match="relevance_threshold"):
        ranking_metrics(recs, relevant_items(held_out, 5.5), k=3)


def test_catalogue_coverage(ranking_case):
    _, recs = ranking_case
    assert catalogue_coverage(recs, 12) == pytest.approx(6 / 12)  # 10, 20, 30, 5, 6, 9

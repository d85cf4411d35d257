from pyspark.sql import Row
from pyspark.sql import functions as F

from cfmodel.ingest.rules import RatingRule, bad_rows, classify, filter_min_counts, latest_by_pair

RULE = RatingRule(0.5, 5.0, 0.5)


CASES = [
    (("1", "2", "3.5", "100", "1,2,3.5,100,9"), "malformed_row"),
    ((None, "2", "3.5", "100"), "missing_user"),
    (("  ", "2", "3.5", "100"), "missing_user"),
    (("1", None, "3.5", "100"), "missing_item"),
    (("1", "2", "", "100"), "missing_rating"),
    (("1", "2", "3.5", None), "missing_timestamp"),
    (("0", "2", "3.5", "100"), "bad_user_id"),
    (("-4", "2", "3.5", "100"), "bad_user_id"),
    (("1e20", "2", "3.5", "100"), "bad_user_id"),
    (("abc", "2", "3.5", "100"), "bad_user_id"),
    (("2147483648", "2", "3.5", "100"), "bad_user_id"),
    (("3.0", "2", "3.5", "100"), "bad_user_id"),
    # Text the cast reads as a number but the id rule rejects: sign, trailing dot, control character.
    (("+5", "2", "3.5", "100"), "bad_user_id"),
    (("5.", "2", "3.5", "100"), "bad_user_id"),
    (("\x015", "2", "3.5", "100"), "bad_user_id"),
    (("1", "99999999999", "3.5", "100"), "bad_item_id"),
    (("1", "x", "3.5", "100"), "bad_item_id"),
    (("1", "2", "abc", "100"), "bad_rating"),
    (("1", "2", "NaN", "100"), "bad_rating"),
    (("1", "2", "Infinity", "100"), "bad_rating"),
    # Java's parseDouble reads these; a plain decimal number they are not.
    (("1", "2", "4d", "100"), "bad_rating"),
    (("1", "2", "4.0f", "100"), "bad_rating"),
    (("1", "2", "0x1p2", "100"), "bad_rating"),
    (("1", "2", "7", "100"), "rating_out_of_range"),
    (("1", "2", "-1", "100"), "rating_out_of_range"),
    (("1", "2", "0", "100"), "rating_out_of_range"),
    (("1", "2", "3.7", "100"), "rating_off_step"),
    (("1", "2", "3.5", "yesterday"), "bad_timestamp"),
    (("1", "2", "3.5", "-5"), "bad_timestamp"),
    (("1", "2", "3.5", "100.0"), "bad_timestamp"),
    # 17 digits and a sign: 18 characters whose value, as a double, rounds up to 10**17.
    (("1", "2", "3.5", "+99999999999999999"), "bad_timestamp"),
    (("1", "2", "3.5", "1234567890123456789"), "bad_timestamp"),
]


def test_each_rule_quarantines_with_its_reason(raw_frame):
    # One frame for all cases keeps this to one Spark job.
    rows = [row for row, _ in CASES]
    out = classify(raw_frame(rows), RULE).collect()
    got = [(tuple(r[c] for c in ("user", "item", "rating", "timestamp")), r["reason"]) for r in out]
    want = [(row[:4], reason) for row, reason in CASES]
    assert sorted(got, key=str) == sorted(want, key=str)
    assert all(r["user_id"] is None and r["rating_value"] is None for r in out)  # bad rows stay unparsed


def test_good_rows_parse_with_whitespace_and_cr(raw_frame):
    raw = raw_frame([(" 7", "0042", "4.5\r", "1700000000\r"), ("2147483647", "1", "0.5", "0"),
                     # Valid, though not as Spark would write them: leading zeros, a sign, an exponent.
                     ("0003", "10", "+4", "007"), ("9", "1000000000", "5e-1", "100000000000000000"),
                     ("8", "20", ".5", "1")])
    c = classify(raw, RULE)
    assert c.where("reason is not null").count() == 0
    rows = sorted(c.where("reason is null").select("user_id", "item_id", F.col("rating_value").alias("rating"),
                                                    F.col("ts").alias("timestamp")).collect())
    assert rows[0] == Row(user_id=3, item_id=10, rating=4.0, timestamp=7)
    assert rows[1] == Row(user_id=7, item_id=42, rating=4.5, timestamp=1700000000)
    assert rows[2] == Row(user_id=8, item_id=20, rating=0.5, timestamp=1)
    # A number of 12 or more digits is in milliseconds: read as seconds.
    assert rows[3] == Row(user_id=9, item_id=1000000000, rating=0.5, timestamp=10 ** 14)
    assert rows[4]["user_id"] == 2147483647


def test_step_and_timestamp_optional(raw_frame):
    rule = RatingRule(1.0, 10.0, None, require_timestamp=False)
    c = classify(raw_frame([("1", "2", "3.7", None), ("1", "3", "10", "")]), rule)
    assert [r["reason"] for r in c.collect()] == [None, None]


def test_bad_rows_keep_raw_text_and_source(raw_frame):
    c = classify(raw_frame([("u1", "2", "3", "100"), ("1", "2", "3", "100")], source="file:/x/r.csv"), RULE)
    bad = bad_rows(c).collect()
    assert len(bad) == 1
    assert (bad[0]["user"], bad[0]["_source_file"], bad[0]["reason"]) == ("u1", "file:/x/r.csv", "bad_user_id")


def test_duplicates_keep_latest_then_highest(raw_frame):
    rows = [("1", "1", "3.0", "100"), ("1", "1", "4.0", "200"), ("1", "1", "2.0", "150"), ("2", "1", "1.0", "5"),
            ("2", "1", "5.0", "5"), ("3", "3", "2.0", "1"), ("3", "3", "2.0", "1"), ("4", "4", "5.0", None),
            ("4", "4", "1.0", "10"), ("5", "5", "2.5", None), ("5", "5", "3.5", None)]
    rule = RatingRule(0.5, 5.0, 0.5, require_timestamp=False)
    pairs = latest_by_pair(classify(raw_frame(rows).repartition(3), rule))
    got = sorted((r.user_id, r.item_id, r.rating, r.timestamp) for r in pairs.collect())
    # A dated rating beats an undated one; among undated ones the highest rating stays.
    assert got == [(1, 1, 4.0, 200), (2, 1, 5.0, 5), (3, 3, 2.0, 1), (4, 4, 1.0, 10), (5, 5, 3.5, None)]
    assert pairs.columns == ["user_id", "item_id", "reason", "rating", "timestamp", "n"]


def test_latest_by_pair_counts_rows_pairs_and_reasons_in_one_aggregation(raw_frame):
    rows = [("1", "1", "3.0", "100"), ("1", "1", "4.0", "200"), ("1", "1", "2.0", "150"),   # latest wins
            ("2", "1", "1.0", "5"), ("2", "1", "5.0", "5"),                                 # tie: highest
            ("3", "3", "2.0", "1"),
            ("x", "1", "3.0", "1"), ("y", "2", "3.0", "1"), ("1", "2", "9.0", "1")]       # 2 + 1 bad
    pairs = latest_by_pair(classify(raw_frame(rows).repartition(3), RULE)).collect()
    good = sorted((r.user_id, r.item_id, r.rating, r.timestamp, r.n) for r in pairs if r.reason is None)
    assert good == [(1, 1, 4.0, 200, 3), (2, 1, 5.0, 5, 2), (3, 3, 2.0, 1, 1)]
    bad = sorted((r.reason, r.n, r.user_id, r.rating) for r in pairs if r.reason is not None)
    assert bad == [("bad_user_id", 2, None, None), ("rating_out_of_range", 1, None, None)]


def test_min_counts(spark):
    df = spark.createDataFrame([(1, 1), (1, 2), (1, 3), (2, 1), (3, 1), (3, 2)], "user_id int, item_id int")
    users = sorted(r.user_id for r in filter_min_counts(df, "user_id", 2).select("user_id").distinct().collect())
    assert users == [1, 3]
    assert filter_min_counts(df, "item_id", 3).count() == 3
    assert filter_min_counts(df, "item_id", 1).count() == 6


def test_rules_hold_under_ansi_mode(raw_frame, spark):
    # With spark.sql.ansi.enabled a failing cast fails the job: bad text must still be quarantined.
    spark.conf.set("spark.sql.ansi.enabled", "true")
    try:
        out = classify(raw_frame([row for row, _ in CASES]), RULE).collect()
    finally:
        spark.conf.unset("spark.sql.ansi.enabled")
    assert sorted(r["reason"] for r in out) == sorted(reason for _, reason in CASES)

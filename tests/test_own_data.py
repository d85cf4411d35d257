"""A user's own data shapes in prepare: events (implicit feedback), inferred rating scales, time formats, the
time split, and the config rules that go with them."""
import pytest
from pyspark.sql import functions as F

from cfmodel.config import Config, PrepareConfig, TrainConfig, load_config
from cfmodel.errors import ConfigError
from cfmodel.pipeline.runs import wire
from cfmodel.prepare.transforms import prepare_ratings
from cfmodel.config.train import derived_y_range, for_data


def _events(raw_frame, rows):
    # Events reach classify with the weight (or nothing) in the rating column.
    return raw_frame([(u, i, w, t) for u, i, w, t in rows])


def test_events_become_one_row_per_pair_with_their_count_and_latest_time(raw_frame):
    """Broken versions caught: events deduplicated like ratings (count 1, the repeat dropped as a
    duplicate), the first time kept instead of the latest, or counts that do not reconcile."""
    rows = [("1", "10", None, "100"), ("1", "10", None, "300"), ("1", "10", None, "200"),
            ("1", "11", None, "50"), ("2", "10", None, "70"), ("2", "12", None, "80"), ("2", "12", None, "90")]
    p = prepare_ratings(_events(raw_frame, rows), PrepareConfig(rating_col=None, valid_fraction=0.01), "implicit")
    got = {(r.user_id, r.item_id): (r.rating, r.timestamp) for r in p.train.union(p.valid).collect()}
    assert got == {(1, 10): (3.0, 300), (1, 11): (1.0, 50), (2, 10): (1.0, 70), (2, 12): (2.0, 90)}
    c = p.counts
    assert (c["input_rows"], c["events_merged"], c["duplicates_dropped"], c["reconciled"]) == (7, 3, 0, True)
    assert p.feedback == "implicit" and p.scale == {"min": 1.0, "max": 3.0, "step": 1.0,
                                                    "inferred": ["min", "max", "step"]}


def test_event_weights_are_summed_and_bad_weights_quarantined_with_counts(raw_frame):
    """Broken versions caught: a weight column ignored (counts instead of sums), or negative, non-numeric
    and missing weights accepted (or lost without a count)."""
    rows = [("1", "10", "2.5", "1"), ("1", "10", "0.5", "2"), ("2", "10", "4", "3"),
            ("2", "11", "-1", "4"), ("2", "11", "abc", "5"), ("3", "11", "", "6"), ("3", "12", "NaN", "7")]
    cfg = PrepareConfig(rating_col=None, weight_col="qty", max_quarantine_fraction=0.9, valid_fraction=0.01)
    p = prepare_ratings(_events(raw_frame, rows), cfg, "implicit")
    got = {(r.user_id, r.item_id): r.rating for r in p.train.union(p.valid).collect()}
    assert got == {(1, 10): 3.0, (2, 10): 4.0}
    assert p.counts["quarantined_by_reason"] == {"bad_weight": 3, "missing_weight": 1}
    assert p.counts["reconciled"] and p.quarantine.count() == 4


def test_a_scale_left_null_is_inferred_and_y_range_follows_it(raw_frame):
    """A 1..10 scale with every scale key null: min, max and step come from the data, and train's
    ``y_range: null`` widens it as the lesson's (0, 5.5) widens 0.5..5. Broken versions caught: the
    0.5..5 defaults applied (the 10s quarantined as out of range), or a y_range capped at 5.5."""
    rows = [(str(u), str(i), str((u * i) % 10 + 1), "1") for u in range(1, 20) for i in range(1, 12)]
    cfg = PrepareConfig(rating_min=None, rating_max=None, rating_step=None, valid_fraction=0.2)
    p = prepare_ratings(raw_frame(rows), cfg)
    assert p.counts["quarantined"] == 0
    assert p.scale == {"min": 1.0, "max": 10.0, "step": 1.0, "inferred": ["min", "max", "step"]}
    assert derived_y_range({"min": 0.5, "max": 5.0}) == [0.0, 5.5]
    meta = {"feedback": "explicit", "rating": p.scale}
    assert for_data(TrainConfig(), meta).y_range == [0.0, 11.0]
    assert for_data(TrainConfig(y_range=[0.0, 12.0]), meta).y_range == [0.0, 12.0]
    with pytest.raises(ConfigError, match=r"train.y_range=\[0.0, 5.5\] does not cover the prepared ratings 1..10"):
        for_data(TrainConfig(y_range=[0.0, 5.5]), meta)


def test_half_star_scale_infers_its_step_and_a_named_bound_is_kept(raw_frame):
    rows = [(str(u), str(i), str(((u + i) % 8 + 2) / 2), "1") for u in range(1, 10) for i in range(1, 10)]
    p = prepare_ratings(raw_frame(rows), PrepareConfig(rating_min=0.5, rating_max=None, rating_step=None))
    assert p.scale == {"min": 0.5, "max": 4.5, "step": 0.5, "inferred": ["max", "step"]}


def test_objective_auto_and_rating_objectives_on_events():
    """Events train the ranking objective by default; a rating objective on them is a one-line error
    naming the key. Broken version caught: hybrid silently fitting event counts as ratings."""
    events = {"feedback": "implicit", "rating": {"min": 1.0, "max": 7.0, "step": 1.0}}
    ratings = {"feedback": "explicit", "rating": {"min": 0.5, "max": 5.0, "step": 0.5}}
    assert for_data(TrainConfig(objective="auto"), events).objective == "softmax"
    assert for_data(TrainConfig(objective="auto"), ratings).objective == "hybrid"
    assert for_data(TrainConfig(objective="bpr"), events).objective == "bpr"
    for objective in ("rating", "hybrid"):
        with pytest.raises(ConfigError, match=f"train.objective={objective} predicts ratings, but .* implicit"):
            for_data(TrainConfig(objective=objective), events)
    assert for_data(TrainConfig(objective="auto", confidence="log"), events).confidence == "log"
    with pytest.raises(ConfigError, match="train.confidence=log weighs rows by their event count, but .* ratings"):
        for_data(TrainConfig(objective="auto", confidence="log"), ratings)
    assert load_config(None, ["evaluate.baselines=[global_mean, biases, popular, als]"]).evaluate.for_feedback(
        "implicit").baselines == ["popular", "implicit_als", "ease"]


def test_timestamps_in_seconds_milliseconds_iso_and_parquet_types_read_as_epoch_seconds(raw_frame, spark):
    """Broken versions caught: milliseconds kept as seconds (a time split would see the year 50000), ISO text
    quarantined as bad_timestamp."""
    stamps = ["1451606400", "1451606400000", "2016-01-01T00:00:00Z", "2016-01-01 00:00:00", "2016-01-01"]
    rows = [(str(u + 1), "7", "4", t) for u, t in enumerate(stamps)] + [("9", "7", "4", "yesterday")]
    p = prepare_ratings(raw_frame(rows), PrepareConfig(max_quarantine_fraction=0.5, valid_fraction=0.01))
    got = {r.user_id: r.timestamp for r in p.train.union(p.valid).collect()}
    assert got == {u: 1451606400 for u in range(1, 6)}
    assert p.counts["quarantined_by_reason"] == {"bad_timestamp": 1}
    # A Parquet timestamp column reaches classify as Spark's text of it.
    text = spark.createDataFrame([("2016-01-01 00:00:00",)], "t string").select(
        F.col("t").cast("timestamp").cast("string").alias("t")).first()["t"]
    assert text == "2016-01-01 00:00:00"


@pytest.mark.slow
def test_time_split_holds_out_each_users_latest_and_a_cutoff_splits_globally(raw_frame):
    """No user's validation row is older than their training rows; with ``split_time`` every row at or after
    it is validation. Broken version caught: the time split drawing by hash like ``per_user``."""
    rows = [(str(u), str(i), "4", str(1000 * u + 37 * ((i * 7919) % 23))) for u in range(1, 30) for i in range(1, 21)]
    p = prepare_ratings(raw_frame(rows), PrepareConfig(split="time", valid_fraction=0.25, valid_cold_start="keep"))
    train = p.train.groupBy("user_id").agg(F.max("timestamp").alias("t"), F.count(F.lit(1)).alias("n"))
    valid = p.valid.groupBy("user_id").agg(F.min("timestamp").alias("v"), F.count(F.lit(1)).alias("m"))
    joined = train.join(valid, "user_id").collect()
    assert len(joined) == 29 and all(r.t <= r.v and r.m == 5 and r.n == 15 for r in joined)
    cut = prepare_ratings(raw_frame(rows), PrepareConfig(split="time", split_time="15000", valid_cold_start="keep"))
    assert cut.valid.where(F.col("timestamp") < 15000).count() == 0
    assert cut.train.where(F.col("timestamp") >= 15000).count() == 0
    assert cut.valid.count() == sum(1 for r in rows if int(r[3]) >= 15000)
    with pytest.raises(ConfigError, match="prepare.split_time='soon' is not a time"):
        prepare_ratings(raw_frame(rows), PrepareConfig(split="time", split_time="soon"))


def test_a_cutoff_given_as_a_number_or_a_yaml_date_is_read_as_text(tmp_path):
    """``--set prepare.split_time=1339227110`` (YAML reads a number) and ``split_time: 2016-06-01`` (a date)."""
    assert load_config(None, ["prepare.split=time", "prepare.split_time=1339227110"]).prepare.split_time == "1339227110"
    conf = tmp_path / "c.yaml"
    conf.write_text("prepare:\n  split: time\n  split_time: 2016-06-01\n")
    assert load_config(str(conf)).prepare.split_time == "2016-06-01"


def test_split_and_feedback_settings_are_checked_where_they_are_read():
    with pytest.raises(ConfigError, match="prepare.split=time needs prepare.timestamp_col"):
        PrepareConfig(split="time", timestamp_col=None)
    with pytest.raises(ConfigError, match="prepare.split_time needs prepare.split=time"):
        PrepareConfig(split_time="2016-01-01")
    with pytest.raises(ConfigError, match="prepare.feedback=explicit needs prepare.rating_col"):
        PrepareConfig(feedback="explicit", rating_col=None)


def test_the_pipeline_never_replaces_a_named_input_with_the_demo_data(tmp_path):
    """``prepare.input`` named beside the demo's generate stage is a one-line error; without generate the
    named file is what prepare reads. Broken version caught: wire() overwriting prepare.input."""
    demo = load_config(None, ["pipeline.stages=[generate, prepare, train]", "prepare.input=mine.csv"])
    with pytest.raises(ConfigError, match="prepare.input=mine.csv but pipeline.stages runs generate"):
        wire(demo, str(tmp_path / "run"), str(tmp_path / "local"))
    own = load_config(None, ["prepare.input=mine.csv"])
    assert wire(own, str(tmp_path / "run"), str(tmp_path / "local")).prepare.input == "mine.csv"
    generated = wire(load_config(None, ["pipeline.stages=[generate, prepare]", "generate.output=g",
                                        "generate.feedback=implicit"]), "r", "l")
    assert generated.prepare.input == "g/events.csv"
    assert Config().prepare.input is None  # nothing is read unless named


def test_layered_config_files_merge_section_by_section(tmp_path):
    base, top = tmp_path / "a.yaml", tmp_path / "b.yaml"
    base.write_text("prepare:\n  seed: 3\n  valid_fraction: 0.3\ntrain:\n  lr: 0.5\n")
    top.write_text("prepare:\n  seed: 4\n")
    cfg = load_config([str(base), str(top)], ["train.lr=0.25"])
    assert (cfg.prepare.seed, cfg.prepare.valid_fraction, cfg.train.lr) == (4, 0.3, 0.25)

"""Ids of any type: text and 64-bit ids are indexed in prepare and every export and fold-in speaks them."""
import json
import sys
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cfmodel.config import PrepareConfig, load_config
from cfmodel.errors import QualityGateError
from cfmodel.generate import generate
from cfmodel.model import TrainedModel
from cfmodel.pipeline import run_pipeline
from cfmodel.prepare.transforms import prepare_ratings

pytestmark = pytest.mark.slow  # whole runs on their own data: left out of make test-fast

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _raw(raw_frame, users, items):
    return raw_frame([(u, i, str(((n * 7) % 9 + 1) / 2), "1") for n, (u, i) in enumerate(zip(users, items))])


def test_id_types_are_read_off_the_input_and_kept_in_the_maps(raw_frame):
    """Broken versions caught: text ids quarantined as bad ids (every row, exit 3), 64-bit ids cut to int32,
    and MovieLens' int ids changing type (int32 maps and splits, as before)."""
    users = [f"u{n % 13}" for n in range(130)]
    items = [str(10 ** 12 + n % 17) for n in range(130)]
    p = prepare_ratings(_raw(raw_frame, users, items), PrepareConfig())
    assert p.id_types == ("string", "long") and p.counts["quarantined"] == 0
    assert dict(p.users.dtypes)["user_id"] == "string" and dict(p.items.dtypes)["item_id"] == "bigint"
    assert {r.user_id for r in p.users.collect()} == set(users)
    assert {r.item_id for r in p.items.collect()} == {int(i) for i in items}
    ints = prepare_ratings(_raw(raw_frame, [str(n % 13 + 1) for n in range(130)], [str(n % 17 + 1)
                                                                                   for n in range(130)]), PrepareConfig())
    assert ints.id_types == ("int", "int")
    assert dict(ints.train.dtypes)["user_id"] == "int" and dict(ints.users.dtypes)["user_id"] == "int"


def test_ids_of_another_shape_than_the_type_named_are_quarantined_with_a_hint(raw_frame):
    """``prepare.id_type=int`` on text ids: a one-line gate error that names the key to change."""
    raw = _raw(raw_frame, [f"u{n % 13}" for n in range(130)], [str(n % 17 + 1) for n in range(130)])
    with pytest.raises(QualityGateError, match=r"bad_user_id=130 .*prepare.id_type=string takes any text id"):
        prepare_ratings(raw, PrepareConfig(id_type="int"))
    mixed = _raw(raw_frame, [f"u{n}" if n % 2 else str(n + 1) for n in range(130)], ["5"] * 130)
    assert prepare_ratings(mixed, PrepareConfig()).id_types == ("string", "int")  # mostly text: text ids
    stray = _raw(raw_frame, [str(n % 13 + 1) for n in range(128)] + ["x", "0"], [str(n % 17 + 1) for n in range(130)])
    p = prepare_ratings(stray, PrepareConfig())  # a few stray ids in int data: quarantined, as always
    assert p.id_types == ("int", "int") and p.counts["quarantined_by_reason"] == {"bad_user_id": 2}


@pytest.fixture(scope="module")
def string_run(spark, tmp_path_factory):
    """Planted ratings with ``u<id>``/``m<id>`` ids through prepare, train and score: every export format,
    a user list and newcomers folded in from a raw file, all with text ids."""
    tmp = tmp_path_factory.mktemp("strings")
    made = generate(load_config(None, ["generate.n_users=300", "generate.n_items=200", "generate.n_ratings=15000",
                                       "generate.seed=5"]).generate, str(tmp / "gen"))
    frame = pd.read_csv(made["ratings"])
    frame["userId"], frame["movieId"] = "u" + frame["userId"].astype(str), "m" + frame["movieId"].astype(str)
    frame.to_csv(tmp / "ratings.csv", index=False)
    # Two newcomers, each rating the 8 most rated movies the way the first user rated them.
    top = frame["movieId"].value_counts().index[:8]
    newer = pd.DataFrame({"userId": ["new-a"] * 8 + ["new-b"] * 8, "movieId": list(top) * 2,
                          "rating": [4.5, 4.0, 3.5, 5.0, 1.0, 2.0, 4.0, 3.0] * 2, "timestamp": 1})
    newer.to_csv(tmp / "newer.csv", index=False)
    pd.DataFrame({"userId": ["u1", "u2", "new-a", "nobody"]}).to_csv(tmp / "users.csv", index=False)
    sets = [f"prepare.input={tmp}/ratings.csv", f"pipeline.output_root={tmp}/runs",
            "pipeline.stages=[prepare, train, score]", "prepare.rows_per_file=5000", "prepare.row_group_mb=1",
            "train.epochs=3", "train.batch_size=256", "train.n_factors=8", "train.progress=false",
            "score.show_examples=0", "score.output_files=1", "score.formats=[parquet, nested, csv, jsonl]",
            f"score.ratings={tmp}/newer.csv", f"score.users={tmp}/users.csv"]
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), sets)
    manifest = run_pipeline(spark, cfg, "s")
    return tmp / "runs" / "s", manifest, frame


def test_every_export_carries_the_text_ids(string_run):
    """Broken versions caught: an export casting ids to int (nulls), or indices written in place of ids."""
    run, _, frame = string_run
    users, items = set(frame["userId"]), set(frame["movieId"])
    long = pd.read_parquet(run / "score" / "recommendations")
    assert set(long["user_id"]) == {"u1", "u2", "new-a", "nobody"}
    assert set(long["item_id"]) <= items
    assert long.set_index("user_id")["source"].groupby(level=0).first().to_dict() == {
        "u1": "model", "u2": "model", "new-a": "folded_in", "nobody": "fallback"}
    csv = pd.read_csv(next((run / "score" / "csv").glob("*.csv")), dtype=str)
    assert set(csv["user_id"]) == set(long["user_id"]) and set(csv["item_id"]) <= items
    nested = pd.read_parquet(run / "score" / "nested")
    assert set(nested["userId"]) == set(long["user_id"])
    assert all(r["movieId"] in items for recs in nested["recommendations"] for r in recs)
    jsonl = [json.loads(line) for f in (run / "score" / "jsonl").glob("*.json") for line in f.read_text().splitlines()]
    assert {r["userId"] for r in jsonl} == set(long["user_id"])
    for side, ids in (("user", users), ("item", items)):
        table = pq.read_table(run / "train" / f"{side}_factors")
        assert str(table.schema.field("id").type) == "string" and set(table.column("id").to_pylist()) == ids
    folded = pq.read_table(run / "score" / "folded_user_factors")
    assert folded.column("id").to_pylist() == ["new-a"]


def test_the_model_keeps_text_ids_through_a_save_and_load(string_run):
    run, _, frame = string_run
    model = TrainedModel.load(str(run / "train"))
    assert model.user_ids.dtype == object and set(model.user_ids) == set(frame["userId"])
    lists = model.recommend([0, 1], 5)
    assert set(lists["user_id"]) == set(model.user_ids[:2]) and set(lists["item_id"]) <= set(frame["movieId"])


def test_ranking_metrics_judge_text_ids(spark):
    """Broken version caught: text ids cast to double (all null), so every list scores 0."""
    from cfmodel.evaluate.metrics import ranking_metrics, relevant_items

    held = spark.createDataFrame([("a", "x", 5.0), ("a", "y", 5.0), ("b", "z", 5.0)],
                                 "user_id string, item_id string, rating double")
    recs = spark.createDataFrame([("a", 1, "x"), ("a", 2, "y"), ("b", 1, "w"), ("b", 2, "z")],
                                 "user_id string, rank int, item_id string")
    got = ranking_metrics(recs, relevant_items(held, None), 2)
    assert got["users"] == 2 and got["recall"] == pytest.approx(1.0) and got["precision"] == pytest.approx(0.75)

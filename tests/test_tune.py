"""cf-tune: trials as Spark tasks (local[2]), successive halving, and train taking up the choice."""
import json
import math

import pandas as pd
import pytest

from cfmodel.config import Config, TrainConfig, TuneConfig, load_config
from helpers import OwnRoot
from cfmodel.errors import ConfigError
from cfmodel.pipeline.runs import fingerprints, wire
from cfmodel.train import run as train
from cfmodel.tune import run as tune
from cfmodel.tune.search import ndcg_at_k, rung_epochs, survivors, trials

pytestmark = pytest.mark.slow  # whole runs on their own data: left out of make test-fast


def test_trials_cover_the_grid_or_a_seeded_sample_of_it():
    space = {"wd": [0.1, 1.0], "n_factors": [4, 8, 16]}
    every = trials(space, 0, 1)
    assert len(every) == 6 and {"n_factors": 16, "wd": 1.0} in every
    some = trials(space, 4, 1)
    assert len(some) == 4 and all(p in every for p in some) and some == trials(space, 4, 1)


def test_successive_halving_keeps_the_best_share_and_grows_the_epochs():
    assert [rung_epochs(8, 2, 2, r) for r in range(4)] == [2, 4, 8, 8]
    assert survivors({0: 0.9, 1: 0.7, 2: math.nan, 3: 0.8}, 2, lower_is_better=True) == [1, 3]
    assert survivors({0: 0.1, 1: 0.3, 2: 0.2}, 3, lower_is_better=False) == [1]


def test_ndcg_by_hand():
    # User 1: hits at ranks 1 and 3 of 2 relevant -> (1 + 1/2) / (1 + 1/log2(3)); user 2: no list -> 0.
    got = ndcg_at_k({1: [10, 11, 12]}, {1: {10, 12}, 2: {5}}, k=3)
    assert got == pytest.approx((1 + 0.5) / (1 + 1 / math.log2(3)) / 2)


def test_tune_config_is_checked():
    with pytest.raises(ConfigError, match=r"tune.space: \['output'\] cannot be tuned"):
        TuneConfig(space={"output": ["x"]})
    with pytest.raises(ConfigError, match="non-empty list"):
        TuneConfig(space={"wd": []})


def test_cf_tune_picks_the_best_trial_stops_losers_early_and_train_takes_it_up(spark, prepared_dir, tmp_path):
    cfg = Config()
    cfg.train = TrainConfig(objective="rating", data=prepared_dir, output=str(tmp_path / "model"), epochs=4, batch_size=256,
                            progress=False)
    # wd 50 crushes every factor: a losing trial, which must stop after the first rung.
    cfg.tune = TuneConfig(data=prepared_dir, output=str(tmp_path / "tune"),
                          space={"n_factors": [4, 8], "wd": [0.5, 50.0]}, min_epochs=1, eta=2)
    summary = tune(spark, cfg, overwrite=False)
    rows = pd.read_csv(tmp_path / "tune" / "results.csv")
    assert summary["trials"] == 4 and summary["rungs"] == 3 and set(rows["epochs"]) == {1, 2, 4}
    assert rows[rows["wd"] == 50.0]["rung"].max() == 0  # losers stopped after one epoch
    last = rows[rows["rung"] == rows["rung"].max()]
    best = json.loads((tmp_path / "tune" / "best.json").read_text())
    assert best["value"] == pytest.approx(last["valid_rmse"].min()) and best["params"]["wd"] == 0.5
    assert summary["concurrent_trials"] == 2  # local[2]: two trials at once (from their start and end times)
    for name in ("results.json", "tune.png", "_SUCCESS"):
        assert (tmp_path / "tune" / name).exists()
    # train.tuned applies the choice over the train section.
    cfg.train.tuned = str(tmp_path / "tune")
    result = train(cfg.train, overwrite=False)
    meta = json.loads((tmp_path / "model" / "meta.json").read_text())
    assert meta["model_args"]["n_factors"] == best["params"]["n_factors"] and meta["config"]["wd"] == 0.5
    assert result["valid_rmse"] == pytest.approx(best["value"], abs=1e-4)  # the same training, repeated


def test_the_pipeline_wires_tune_into_train():
    cfg = load_config(None, ["pipeline.stages=[prepare, tune, train]"])
    wired = wire(cfg, "/runs/r1", "/tmp/r1")
    assert wired.tune.data == wired.prepare.output == wired.train.data and wired.train.tuned == "/runs/r1/tune"
    fps = fingerprints(wired, [], "v")
    other = load_config(None, ["pipeline.stages=[prepare, tune, train]", "tune.eta=3"])
    assert fingerprints(wire(other, "/runs/r1", "/tmp/r1"), [], "v")["train"] != fps["train"]


def test_pipeline_tune_stage_chooses_what_train_uses_and_the_report_shows_it(spark, pipeline_run, tmp_path):
    from cfmodel.pipeline.stage import run_pipeline

    # On a copy of conftest's pipeline run: prepare is copied from it, tune, train and evaluate run.
    cfg = OwnRoot(pipeline_run[0], tmp_path).config("pipeline.stages=[generate, prepare, tune, train, evaluate]",
                                                    "tune.space={n_factors: [4, 8], wd: [0.05, 5.0]}",
                                                    "evaluate.plots=true")
    manifest = run_pipeline(spark, cfg, "t1")
    assert manifest["stages"]["prepare"]["reused_from"] == "r1"
    run_dir = tmp_path / "runs" / "t1"
    best = json.loads((run_dir / "tune" / "best.json").read_text())
    meta = json.loads((run_dir / "train" / "meta.json").read_text())
    assert meta["config"]["tuned"].endswith("/t1/tune") and meta["config"]["wd"] == best["params"]["wd"]
    assert manifest["stages"]["tune"]["report"]["trials"] == 4
    report = (run_dir / "evaluate" / "report.html").read_text()
    assert "Hyperparameter search (cf-tune)" in report and (run_dir / "evaluate" / "plots" / "tune.png").exists()


def test_validation_ndcg_counts_every_rating_relevant_without_a_threshold(prepared_dir, trained_model):
    """``tune.relevance_threshold: null``, as the per-user protocol's evaluation counts relevance."""
    from cfmodel.model import TrainedModel
    from cfmodel.tune.trial import validation_ndcg

    model = TrainedModel.load(trained_model)
    every = validation_ndcg(model, prepared_dir, 10, None)
    assert every == validation_ndcg(model, prepared_dir, 10, 0.0)
    assert 0 < every < 1 and every != validation_ndcg(model, prepared_dir, 10, 4.0)

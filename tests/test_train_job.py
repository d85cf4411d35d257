"""cf-train end to end, in process (it is a driver-side step, not a Spark job)."""
import json
from pathlib import Path

import pandas as pd
import torch

from cfmodel.export import load_model
from jobs.train import main


def _args(prepared_dir, out, *extra):
    return ["--set", f"train.data={prepared_dir}", "--set", f"train.output={out}", "--set", "train.n_factors=6",
            "--set", "train.epochs=2", "--set", "train.progress=false", "--set", "train.loader=petastorm",
            "--set", "train.batch_size=512", "--set", "train.schedule=constant", *extra]


def test_cf_train_writes_factors_model_and_metrics(prepared_dir, tmp_path, capsys):
    out = tmp_path / "model"
    assert main(_args(prepared_dir, out)) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["loader"] == "petastorm" and result["device"] == "cpu" and result["epochs"] == 2
    for name in ("model.pt", "meta.json", "metrics.json", "metrics.csv", "_SUCCESS", "checkpoints/best.pt"):
        assert (out / name).exists(), name
    meta = json.loads((out / "meta.json").read_text())
    prepared = json.loads((Path(prepared_dir) / "meta.json").read_text())
    assert meta["data"]["input_sha256"] == prepared["input"]["sha256"] and len(prepared["input"]["sha256"]) == 64
    assert abs(meta["valid_mse"] - min(m["valid_mse"] for m in meta["history"])) < 1e-4

    items = pd.read_parquet(out / "item_factors")
    known = pd.read_parquet(f"{prepared_dir}/items").sort_values("item_idx")
    assert items["id"].tolist() == known["item_id"].tolist()
    assert len(items["features"].iloc[0]) == 6

    model, payload = load_model(str(out / "model.pt"))
    assert payload["model"]["name"] == "dot_bias"
    # The exported factors are the best epoch's weights, the same as model.pt's.
    assert torch.allclose(torch.tensor(items["features"].iloc[3]), model.i_weight.weight[3])

    assert main(_args(prepared_dir, out)) == 2
    assert "output already exists" in capsys.readouterr().err
    assert main(_args(prepared_dir, out, "--resume", "--set", "train.epochs=3")) == 0
    assert [m["epoch"] for m in json.loads((out / "metrics.json").read_text())] == [1, 2, 3]


def test_cf_train_lr_find(prepared_dir, tmp_path, capsys):
    out = tmp_path / "lr"
    assert main(_args(prepared_dir, out, "--lr-find", "--set", "train.lr_find_steps=60",
                      "--set", "train.loader=memory")) == 0
    assert "suggested learning rate" in capsys.readouterr().out
    assert (out / "lr_find.png").exists()
    assert len(json.loads((out / "lr_find.json").read_text())["lrs"]) > 10


def test_cf_train_bad_config_and_data(tmp_path, capsys):
    assert main(["--set", "train.modle=dot"]) == 2
    assert "unknown config key 'train.modle'" in capsys.readouterr().err
    assert main(["--set", f"train.data={tmp_path}", "--set", f"train.output={tmp_path}/m"]) == 2
    assert "no meta.json" in capsys.readouterr().err

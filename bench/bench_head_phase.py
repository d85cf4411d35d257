"""Head-phase benchmark: would a hybrid whose ranking head trains on, alone, after the rating tables, make
softmax's lists? One run, both protocols of ``bench_ranking.py``, ml-latest-small-2016.

    .venv/bin/python bench/bench_head_phase.py              # needs ../shared/data/ml-latest-small-2016

For each protocol it trains the shipped ``rating``, ``softmax`` and ``hybrid`` models, then continues the
hybrid for ``--head-epochs`` more epochs with every weight but the ranking head frozen (its own one-cycle
schedule at ``rank_lr``, the hybrid's loss, whose rating term then moves nothing): the rating tables, and
so the RMSE, stay exactly the hybrid's. Each model is evaluated beside most popular and EASE; the table gives
NDCG@10 over softmax's and EASE's, coverage, RMSE and the training seconds over the rating model's.

This is an experiment, not the shipped trainer: the head phase here runs in one process, dense updates, no
checkpoints (the train stage's resume, sparse updates and data-parallel ranks do not know it).
"""
from __future__ import annotations

import argparse
import dataclasses
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.bench_ranking import PROTOCOLS, each_protocol, protocol_sets  # noqa: E402
from cfmodel import prepare, train  # noqa: E402
from cfmodel.config import load_config  # noqa: E402
from cfmodel.config.train import for_data  # noqa: E402
from cfmodel.dataset import PreparedData  # noqa: E402
from cfmodel.evaluate.compare import evaluate_all, load_split  # noqa: E402
from cfmodel.lists import load_inputs  # noqa: E402
from cfmodel.model import TrainedModel  # noqa: E402
from cfmodel.storage import Storage  # noqa: E402
from cfmodel.train.fit import objective_for, setup  # noqa: E402
from cfmodel.train.trainer import Trainer  # noqa: E402


def head_phase(train_cfg, hybrid: Path, out: Path, epochs: int) -> float:
    """Continue the hybrid model in ``hybrid`` for ``epochs`` with only its ranking head trainable; write it
    to ``out`` (the hybrid's meta.json, new weights and factor tables); the seconds it trained."""
    base = TrainedModel.load(str(hybrid))
    model = base.module.train()
    head = {id(p) for p in model.rank_head_parameters()}
    for p in model.parameters():
        p.requires_grad_(id(p) in head)
    cfg = for_data(dataclasses.replace(train_cfg, epochs=epochs, row_updates="dense", output=str(out)),
                   PreparedData(train_cfg.data).meta)
    data, train_loader, valid_loader, _, device, _ = setup(cfg)
    started = time.time()
    Trainer(model, train_loader, valid_loader, cfg, f"{out}.checkpoints", device,
            objective=objective_for(cfg, data)).fit()
    seconds = time.time() - started
    shutil.copytree(hybrid, out)
    for table in out.glob("*factors"):
        shutil.rmtree(table)
    TrainedModel(base.args, model.cpu().eval(), base.user_ids, base.item_ids, base.extra).save(str(out))
    return seconds


def run_protocol(spark, name: str, out: Path, head_epochs) -> list:
    cfg = load_config(str(ROOT / "conf" / "local.yaml"), protocol_sets(name, out))
    prepare.run(spark, cfg, overwrite=True)
    split = load_split(spark, cfg.prepare.output)
    models, seconds = {}, {}
    for objective in ("rating", "softmax", "hybrid"):
        tc = dataclasses.replace(cfg.train, objective=objective, output=str(out / objective))
        seconds[objective] = train.run(tc, overwrite=True)["fit_seconds"]
        models[objective] = out / objective
    for epochs in head_epochs:
        label = f"hybrid + head {epochs} epochs"
        tc = dataclasses.replace(cfg.train, objective="hybrid")
        seconds[label] = seconds["hybrid"] + head_phase(tc, out / "hybrid", out / f"head{epochs}", epochs)
        models[label] = out / f"head{epochs}"
    rows = []
    for i, (label, path) in enumerate(models.items()):
        ev = dataclasses.replace(cfg.evaluate, model=str(path), data=cfg.prepare.output,
                                 baselines=["popular", "ease"] if i == 0 else [])
        table = evaluate_all(spark, split, load_inputs(spark, Storage(spark), ev), ev,
                             PreparedData(cfg.prepare.output).rating_range)["table"]
        rows += [{**r, "label": label if j == 0 else r["method"], "protocol": name,
                  "cost": seconds[label] / seconds["rating"] if j == 0 else None} for j, r in enumerate(table)]
        print(f"[{name}] {label}: NDCG@10 {table[0]['ndcg']:.4f}", flush=True)
    split.release()
    return rows


def print_table(rows: list) -> None:
    ref = {(r["protocol"], r["label"]): r for r in rows}
    print("\n| protocol | model | NDCG@10 | × softmax | × EASE | coverage | RMSE | train s × rating |\n"
          "|---|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        softmax, ease = ref[(r["protocol"], "softmax")]["ndcg"], next(
            x["ndcg"] for x in rows if x["protocol"] == r["protocol"] and x["method"].startswith("EASE"))
        rmse = f"{r['rmse']:.4f}" if r.get("rmse") is not None else "—"
        cost = f"{r['cost']:.1f}" if r["cost"] is not None else "—"
        print(f"| {r['protocol']} | {r['label']} | {r['ndcg']:.4f} | {r['ndcg'] / softmax:.3f} | "
              f"{r['ndcg'] / ease:.3f} | {r['coverage']:.3f} | {rmse} | {cost} |")
    print("\nThe hybrid's rating tables are frozen in the head phase: its RMSE is the hybrid's exactly. Train "
          "seconds: each model's fit over the rating model's (8 epochs), same run; a head phase counts the "
          "hybrid's fit too.")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--protocols", nargs="+", default=list(PROTOCOLS), choices=list(PROTOCOLS))
    parser.add_argument("--head-epochs", nargs="+", type=int, default=[8, 16])
    args = parser.parse_args(argv)
    print_table(each_protocol(args.protocols, lambda spark, name, out: run_protocol(spark, name, out,
                                                                                    args.head_epochs)))
    return 0


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_head_phase"):
        code = main()
    sys.exit(code)

"""The trainer alone at a given shape: ratings/s per batch size, on the CPU or a GPU, and where the time goes.

    .venv/bin/python bench/bench_trainer.py                                   # ML-20M shape, this machine's device
    .venv/bin/python bench/bench_trainer.py --ratings 1000000 --batch-sizes 1024
    python3 bench/bench_trainer.py --device cuda --objectives rating hybrid --batch-sizes 65536 262144 --resident
    python3 bench/bench_trainer.py --device cuda --ratings 300000 --users 6000 --items 3000 \
        --objectives rating bpr softmax hybrid --row-updates sparse dense --compare-cpu
    .venv/bin/python bench/bench_trainer.py --ratings 1000000 --users 7000 --items 3000 --objectives rating bpr softmax hybrid
    .venv/bin/python bench/bench_trainer.py --ratings 2000000 --batch-sizes 1024 --row-updates sparse dense
    .venv/bin/python bench/bench_trainer.py --batch-sizes 1024 --set train.epochs=8 --set train.schedule=one_cycle \
        --against train.wd_epoch_steps=null

No Spark and no files: planted ratings (user and item factors, Zipf item
popularity, noise) are drawn as tensors, held by the in-memory loader, and
trained for one epoch by :class:`cfmodel.train.trainer.Trainer` (``dot_bias``,
50 factors, AdamW, constant learning rate), exactly the loop the train stage
runs. For each batch size it prints the epoch's ratings/s as the trainer
reports it (the training loop only, validation excluded), the time the loader
alone takes to deliver the epoch's batches to the device, and the peak device
memory. ``--resident`` also runs each batch size with the split already in
device memory (what the train stage does with the memory loader on a GPU), so
the difference is the cost of copying each batch from the host. ``--objectives``
trains each ``train.objective`` in turn (the ranking ones sample negatives as
the train stage does) and prints its speed over the rating objective's.
``--row-updates sparse dense`` compares the optimisers (``train.row_updates``:
SparseAdamW on the rows a batch touches, or AdamW over whole tables).
``--set train.KEY=VALUE`` changes the run (``train.epochs=8
train.schedule=one_cycle``: the validation MSE after a whole default-length run
at each batch size; the speeds are then means over the epochs).
``--against train.KEY=VALUE`` runs every configuration a second time with
that key on top, printed beside it (``train.wd_epoch_steps=null``: the decay
cap against per-step decay, in one run).
``--compare-cpu`` (with ``--device cuda``) trains each run on the CPU too and
prints how far the validation losses differ: the same data, permutation and
negatives (all drawn on the CPU), so only float arithmetic separates them (with
``--resident`` the GPU runs draw their permutation on the GPU, a different order).
"""
from __future__ import annotations

import argparse
import itertools
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cfmodel.config import TrainConfig, apply_overrides  # noqa: E402
from cfmodel.model import ModelArgs  # noqa: E402
from cfmodel.train.loaders import InMemoryLoader  # noqa: E402
from cfmodel.train.negatives import NegativeSampler, RatedPairs  # noqa: E402
from cfmodel.train.objectives import make_objective  # noqa: E402
from cfmodel.train.sparse_adamw import SparseAdamW  # noqa: E402
from cfmodel.train.trainer import Trainer, resolve_device  # noqa: E402


def planted(n_users: int, n_items: int, n_ratings: int, seed: int = 0):
    """(users, items, ratings) tensors: planted 8-factor taste, Zipf item popularity, noise, 0.5..5 stars."""
    g = torch.Generator().manual_seed(seed)
    users = torch.randint(0, n_users, (n_ratings,), generator=g)
    popularity = 1.0 / torch.arange(1, n_items + 1, dtype=torch.float64) ** 0.8
    items = torch.multinomial(popularity, n_ratings, replacement=True, generator=g)
    uf, vf = torch.randn(n_users, 8, generator=g) * 0.4, torch.randn(n_items, 8, generator=g) * 0.4
    raw = 3.5 + (uf[users] * vf[items]).sum(1) + 0.5 * torch.randn(n_ratings, generator=g)
    return users, items, (raw * 2).round().clamp(1, 10) / 2


def loader_seconds(loader: InMemoryLoader, device: torch.device) -> float:
    """Seconds for the loader to hand one epoch's batches to ``device`` (no training)."""
    started = time.perf_counter()
    for users, items, ratings in loader.epoch(1):
        users.to(device), items.to(device), ratings.to(device)
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - started


def one_epoch(data, valid, batch_size: int, device: torch.device, amp: bool, resident: bool, n_users: int,
              n_items: int, objective: str = "rating", row_updates: str = "auto",
              settings: Optional[dict] = None) -> dict:
    """Train one epoch (or what ``settings``, train config keys, ask for); returns what was measured: the
    mean ratings/s and seconds of an epoch, the last epoch's validation figures."""
    cfg = TrainConfig(**{"batch_size": batch_size, "epochs": 1, "schedule": "constant", "device": device.type,
                         "amp": amp, "progress": False, "lr": 0.01, "objective": objective,
                         "row_updates": row_updates, **(settings or {})})
    sampler = None if objective == "rating" else NegativeSampler(RatedPairs(data[0], data[1], n_items),
                                                                 cfg.sampling_method, cfg.exclude_rated)
    obj = make_objective(objective, sampler, cfg.negatives, cfg.samples, cfg.positive_threshold,
                         cfg.ranking_weight, cfg.hybrid_ranking)
    args = ModelArgs("dot_bias", n_users, n_items, 50, rank_factors=cfg.rank_factors if objective == "hybrid" else None)
    train = InMemoryLoader(*data, batch_size=batch_size, shuffle=True, seed=1)
    valid_loader = InMemoryLoader(*valid, batch_size=1 << 18, shuffle=False)
    if resident:  # as the train stage holds a memory loader's split on a GPU
        train.to(device), valid_loader.to(device)
    feed = loader_seconds(train, device)
    torch.manual_seed(0)
    model = args.build()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(model, train, valid_loader, cfg, out, device, objective=obj)
        history = trainer.fit()
        # The CUDA path end to end: the checkpoint reloads onto the device with the same weights.
        again = Trainer(args.build(), train, valid_loader, cfg, out, device, objective=obj)
        assert again.resume_from(os.path.join(out, "last.pt"))
        same = all(torch.equal(a, b) for a, b in zip(again.model.state_dict().values(),
                                                     trainer.model.state_dict().values()))
    peak = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else float("nan")
    return {"objective": objective, "updates": "sparse" if isinstance(trainer.opt, SparseAdamW) else "dense",
            "batch": batch_size, "amp": amp, "resident": resident,
            "ratings_per_s": sum(m.ratings_per_s for m in history) / len(history),
            "epoch_s": sum(m.seconds for m in history) / len(history), "loader_s": feed,
            "valid_mse": history[-1].valid_mse, "valid_loss": history[-1].valid_loss, "peak_mib": peak,
            "reloaded": same}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=138_000)
    parser.add_argument("--items", type=int, default=27_000)
    parser.add_argument("--ratings", type=int, default=20_000_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024, 16384])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--amp", action="store_true", help="also run each batch size with bf16 autocast (CUDA)")
    parser.add_argument("--resident", action="store_true", help="also run with the split in device memory")
    parser.add_argument("--objectives", nargs="+", default=["rating"],
                        choices=["rating", "bpr", "softmax", "hybrid"])
    parser.add_argument("--row-updates", nargs="+", default=["auto"], choices=["auto", "sparse", "dense"],
                        help="train.row_updates to compare (sparse: SparseAdamW on the batch's rows)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a train key for every run, e.g. train.epochs=8, train.schedule=one_cycle, "
                             "train.lr=0.04, train.wd=0.05 (default: 1 epoch, constant lr 0.01)")
    parser.add_argument("--compare-cpu", action="store_true",
                        help="also train each run on the CPU and print the validation loss's relative difference "
                             "(a check of the CUDA path: same data, seeds and negatives)")
    parser.add_argument("--against", action="append", default=[], metavar="KEY=VALUE",
                        help="also run every configuration with this train key on top of --set, printed beside "
                             "it (e.g. train.wd_epoch_steps=null: per-step decay against the default cap)")
    args = parser.parse_args(argv)
    settings = apply_overrides({}, args.set).get("train", {})
    against = apply_overrides({}, args.against).get("train", {})
    device = resolve_device(args.device)
    started = time.perf_counter()
    users, items, ratings = planted(args.users, args.items, args.ratings + args.ratings // 20)
    cut = args.ratings
    data, valid = (users[:cut], items[:cut], ratings[:cut]), (users[cut:], items[cut:], ratings[cut:])
    name = torch.cuda.get_device_name(0) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{args.ratings:,} ratings, {args.users:,} users x {args.items:,} items, dot_bias 50 factors, "
          f"torch {torch.__version__} on {name}; data drawn in {time.perf_counter() - started:.1f} s"
          + (f"; {', '.join(args.set)}" if args.set else ""), flush=True)
    print(f"{'objective':>9} {'updates':>7} {'x rating':>8} {'batch':>7} {'amp':>5} {'resident':>8} {'ratings/s':>12} "
          f"{'epoch s':>8} {'loader s':>9} {'valid MSE':>9} {'peak MiB':>9} {'reloaded':>8}"
          + (" loss vs CPU" if args.compare_cpu and device.type == "cuda" else "")
          + (" run (against: " + ", ".join(args.against) + ")" if args.against else ""), flush=True)
    rating_speed = {}
    # Each configuration with --set, then (with --against) the same with those overrides on top: side by side.
    variants = [("set", settings)] + ([("against", {**settings, **against})] if against else [])
    amps = [False, True] if args.amp and device.type == "cuda" else [False]
    residents = [False, True] if args.resident and device.type == "cuda" else [False]
    for batch, amp, resident, updates, (label, run_settings), objective in itertools.product(
            args.batch_sizes, amps, residents, args.row_updates, variants, args.objectives):
        r = one_epoch(data, valid, batch, device, amp, resident, args.users, args.items, objective, updates,
                      run_settings)
        key = (batch, amp, resident, updates, label)
        rating_speed.setdefault(key, r["ratings_per_s"] if objective == "rating" else None)
        ratio = (r["ratings_per_s"] / rating_speed[key]) if rating_speed[key] else float("nan")
        versus = ""
        peak = "—" if math.isnan(r["peak_mib"]) else f"{r['peak_mib']:,.0f}"  # a device's peak: CUDA only
        if args.compare_cpu and device.type == "cuda":
            cpu = one_epoch(data, valid, batch, torch.device("cpu"), False, False, args.users, args.items,
                            objective, updates, run_settings)
            versus = f" {abs(r['valid_loss'] / cpu['valid_loss'] - 1):>13.2e}"
        print(f"{objective:>9} {r['updates']:>7} {ratio:>8.2f} {r['batch']:>7} {str(r['amp']):>5} "
              f"{str(r['resident']):>8} {r['ratings_per_s']:>12,.0f} {r['epoch_s']:>8.2f} "
              f"{r['loader_s']:>9.2f} {r['valid_mse']:>9.4f} {peak:>9} "
              f"{str(r['reloaded']):>8}{versus}" + (f" {label}" if against else ""), flush=True)
    return 0


if __name__ == "__main__":
    from bench.results import recorded

    with recorded("bench_trainer"):
        code = main()
    sys.exit(code)

"""Build the evaluation report: metrics table, interpretation tables, plots, HTML page.

Spark computes everything that touches ratings; the driver handles the small
item tables (factors of a few thousand movies) and the plots. Output layout
under ``evaluate.output``: ``metrics.json``, ``report.html``, ``plots/*.png``
and ``tables/*.csv``.
"""
from __future__ import annotations

import io
import json
import logging
import os
import tempfile
from typing import Dict, List

import numpy as np
import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from cfmodel.config import Config
from cfmodel.dataset import PreparedData
from cfmodel.evaluate import interpret
from cfmodel.evaluate.compare import evaluate_all, load_split
from cfmodel.evaluate.html import Section, render
from cfmodel.model import TrainedModel
from cfmodel.lists import load_inputs
from cfmodel.storage import Storage
from cfmodel.titles import read_titles

LOG = logging.getLogger(__name__)


def _crosstab(split, model: TrainedModel, n: int, titles: Dict[int, str]):
    top_users = split.users.orderBy(F.desc("n_ratings"), "user_id").limit(n).select("user_id", "user_idx").toPandas()
    top_items = split.items.orderBy(F.desc("n_ratings"), "item_id").limit(n).select("item_id", "item_idx").toPandas()
    rated = (split.train.unionByName(split.valid)
             .where(F.col("user_id").isin(top_users["user_id"].tolist())
                    & F.col("item_id").isin(top_items["item_id"].tolist()))
             .select("user_id", "item_id", "rating").toPandas())
    pairs = top_users.merge(top_items, how="cross")
    pred = model.predict(pairs["user_idx"].to_numpy(np.int64), pairs["item_idx"].to_numpy(np.int64))
    return interpret.crosstab(rated, pairs.assign(prediction=pred), titles)


def build_report(spark: SparkSession, storage: Storage, cfg: Config, out: str) -> Dict[str, object]:
    """Evaluate, interpret, plot and write everything under ``out``; returns ``metrics.json``'s content."""
    data = PreparedData(cfg.evaluate.data, storage)
    ev = cfg.evaluate.for_feedback(data.feedback)
    split, inputs = load_split(spark, ev.data), load_inputs(spark, storage, ev)
    # ALS's checkpoints beside the output: on storage every executor reaches; gone before the output is published.
    result = evaluate_all(spark, split, inputs, ev, data.rating_range, checkpoints=f"{out}/_als_checkpoints")
    table = pd.DataFrame(result["table"])
    model_row = result["table"][0]
    trained = storage.read_json(f"{ev.model}/meta.json")

    titles = read_titles(storage, ev.titles)
    movies = interpret.movie_table(inputs.item_factors.select("id", "idx", "bias", "features").toPandas(),
                                   split.items.select("item_id", "n_ratings", "mean_rating").toPandas(), titles)
    title_of = dict(zip(movies["item_id"], movies["title"]))
    top = interpret.popular(movies, ev.top_movies).reset_index(drop=True)
    extremes = interpret.bias_extremes(top) if top["bias"].notna().any() else None
    coords, explained = interpret.pca(np.stack(top["features"].to_numpy()).astype(np.float64), 3)
    ends = interpret.component_ends(top, coords)
    similar_ids = ev.similar_to or top["item_id"].tolist()[:1]
    similar = {i: interpret.similar(movies, i) for i in similar_ids}
    cross = _crosstab(split, inputs.model, ev.table_size, title_of)

    n_valid = split.valid.count()
    preds = result["valid_predictions"]  # None for a ranking objective: no rating predictions to plot
    history = pd.read_csv(io.StringIO(storage.read_text(f"{ev.model}/metrics.csv")))
    history["ratings_per_s"] = history["ratings_per_s"].round().astype("int64")
    # evaluate.plots false: a scheduled job that reads only metrics.json and the quality gate skips the drawing,
    # and the Spark jobs that feed only the drawing.
    made = (_write_plots(storage, out, history, *_plotted_rows(split, preds, n_valid, ev), top, coords, cross,
                         extremes) if ev.plots else {})
    if preds is not None:
        preds.unpersist()
    csv_tables = {"metrics": table, "crosstab_actual": cross["actual"].reset_index(),
                  "crosstab_predicted": cross["predicted"].reset_index()}
    if extremes is not None:
        csv_tables.update({f"bias_{k}": v for k, v in extremes.items()})
    for name, frame in csv_tables.items():
        storage.write_text(f"{out}/tables/{name}.csv", frame.to_csv(index=False))

    metrics = {"stage": "evaluate", "model": ev.model, "data": ev.data, "k": ev.k,
               "feedback": data.feedback, "baselines": list(ev.baselines),
               "relevance_threshold": ev.relevance_threshold, "users_evaluated": result["users"],
               "valid_rows": n_valid, "valid_rmse": model_row["rmse"], "valid_mae": model_row["mae"],
               "methods": result["table"], "pca_explained_variance": [float(v) for v in explained],
               "trained": {k: trained.get(k) for k in ("model", "valid_mse", "best_epoch", "epochs")}}
    sections = _sections(table, ev, history, extremes, ends, explained, similar, title_of, cross, made)
    tuned = (trained.get("config") or {}).get("tuned")
    if tuned:
        sections.append(tune_section(storage, tuned, out, ev.plots))
    summary = [f"Model {ev.model} ({inputs.model.args.name}, {inputs.model.args.n_factors} factors) on "
               f"{ev.data}: {n_valid:,} held-out ratings; ranking metrics at k={ev.k} over {result['users']:,} "
               + ("users with any held-out rating (all relevant)." if ev.relevance_threshold is None else
                  f"users with a held-out rating of at least {ev.relevance_threshold}.")]
    storage.write_text(f"{out}/report.html", render("Collaborative filtering: evaluation report", summary, sections,
                                                    "Generated by cf-evaluate (cfmodel)."))
    storage.write_json(f"{out}/metrics.json", metrics)
    split.release()
    return metrics


def tune_section(storage: Storage, tuned: str, out: str, plots: bool = True) -> Section:
    """The search that chose the model's settings (``train.tuned``): its trials by rung and, with ``plots``,
    its plot (copied to ``out/plots/tune.png``)."""
    if plots:
        storage.write_bytes(f"{out}/plots/tune.png", storage.read_bytes(f"{tuned}/tune.png"))
    rows = pd.read_csv(io.StringIO(storage.read_text(f"{tuned}/results.csv")))
    best = json.loads(storage.read_text(f"{tuned}/best.json"))
    rows["seconds"] = rows["seconds"].round(1)
    shown = rows.drop(columns=["metric", "status", "started", "ended", "host", "pid", "valid_rmse"], errors="ignore")
    return Section("tune", "Hyperparameter search (cf-tune)",
                   [f"{tuned}: {rows['trial'].nunique()} trials, successive halving over "
                    f"{rows['rung'].max() + 1} rungs; chosen {best['params']} ({best['metric']} {best['value']:.4f}), "
                    f"which this model was trained with."],
                   tables=[("trials by rung", shown)],
                   images=[("plots/tune.png", "trials by rung and over time")] if plots else [])


def _plotted_rows(split, preds, n_valid: int, ev) -> tuple:
    """(the training split's rating counts, a sample of held-out predictions or None) as pandas, for the plots."""
    counts = split.train.groupBy("rating").count().orderBy("rating").toPandas()
    sample = None if preds is None else (preds.sample(fraction=min(1.0, 1.5 * ev.sample_rows / max(n_valid, 1)),
                                                      seed=ev.seed).limit(ev.sample_rows)
                                         .select("rating", "prediction").toPandas())
    return counts, sample


def _write_plots(storage: Storage, out: str, history, counts, sample, top, coords, cross, extremes) -> Dict[str, str]:
    """Draw every plot locally, then copy it to ``out/plots/`` (any URL); returns name -> local path."""
    # Imported here: matplotlib and seaborn take 1.5 s to import, which every cf-* process would pay.
    from cfmodel.evaluate import plots
    with tempfile.TemporaryDirectory() as local:
        made = {
            "training_curves": plots.training_curves(history, os.path.join(local, "training_curves.png")),
            "rating_distribution": plots.rating_distribution(counts, os.path.join(local, "rating_distribution.png")),
            "pca_scatter": plots.pca_scatter(top["title"].to_numpy(), coords, os.path.join(local, "pca_scatter.png")),
            "crosstab": plots.crosstab_heatmaps(cross["actual"], cross["predicted"],
                                                os.path.join(local, "crosstab.png")),
        }
        if sample is not None:
            made["predicted_vs_actual"] = plots.predicted_vs_actual(sample, os.path.join(local,
                                                                                        "predicted_vs_actual.png"))
        if extremes is not None:
            made["biases"] = plots.bias_bars(extremes, os.path.join(local, "biases.png"))
        for name, path in made.items():
            with open(path, "rb") as fh:
                storage.write_bytes(f"{out}/plots/{name}.png", fh.read())
    return made


def _sections(table, ev, history, extremes, ends, explained, similar, title_of, cross, made) -> List[Section]:
    shown = table.rename(columns={"precision": f"precision@{ev.k}", "recall": f"recall@{ev.k}",
                                  "ndcg": f"NDCG@{ev.k}", "map": f"MAP@{ev.k}"})
    sections = [
        Section("metrics", "Metrics on the validation split",
                ["RMSE and MAE over every held-out rating. Top-k lists exclude each user's training ratings; "
                 "a held-out rating at or above the threshold is relevant. Coverage: share of movies that appear "
                 "in at least one list. — where a method has no such output."],
                tables=[("model and baselines", shown)]),
        Section("training", "Training", [f"{len(history)} epochs; validation MSE per epoch."],
                tables=[("per epoch", history)], images=[("plots/training_curves.png", "training curves")]),
        Section("ratings", "Ratings", ["Rating distribution of the training split, and the model's predictions "
                                       "for held-out ratings grouped by the actual rating."],
                images=[("plots/rating_distribution.png", "rating distribution"),
                        ("plots/predicted_vs_actual.png", "predicted vs actual")]),
    ]
    if extremes is not None:
        sections.append(Section("biases", "Movie biases",
                                [f"Among the {ev.top_movies} most-rated movies: the learned bias is the part of a "
                                 "movie's ratings that the user's generosity and taste do not explain."],
                                tables=[("highest bias", extremes["highest"]), ("lowest bias", extremes["lowest"])],
                                images=[("plots/biases.png", "movie biases")]))
    sections.append(Section(
        "pca", "Principal components of the movie factors",
        [f"Explained variance of the first components: {', '.join(f'{v:.1%}' for v in explained)}."],
        tables=[(f"component {i + 1}", e) for i, e in enumerate(ends)],
        images=[("plots/pca_scatter.png", "PCA scatter of popular movies")]))
    sections.append(Section("similar", "Similar movies (cosine similarity of factors)",
                            tables=[(f"nearest to {title_of.get(i, i)}", f) for i, f in similar.items()]))
    sections.append(Section(
        "crosstab", f"Top {ev.table_size} raters × top {ev.table_size} movies",
        ["The lesson's spreadsheet view: what the most active users gave the most-rated movies (blank: not rated), "
         "and what the model predicts for every cell."],
        tables=[("actual", cross["actual"].reset_index()), ("predicted", cross["predicted"].reset_index())],
        images=[("plots/crosstab.png", "actual and predicted ratings")]))
    for section in sections:  # only the plots drawn: none with evaluate.plots false, none a ranking model lacks
        section.images = [(src, alt) for src, alt in section.images if os.path.basename(src)[:-4] in made]
    return sections

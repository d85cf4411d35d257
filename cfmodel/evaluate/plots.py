"""The report's plots, as PNG files (matplotlib without a display, seaborn styling)."""
from __future__ import annotations

from typing import Dict

import matplotlib

matplotlib.use("Agg")  # batch jobs have no display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

sns.set_theme(style="whitegrid", context="notebook")


def _save(fig, path: str) -> str:
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def training_curves(history: pd.DataFrame, path: str) -> str:
    """Training and validation MSE per epoch (the trainer's ``metrics.csv``), or the objective's loss for
    a ranking objective (no MSE)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    column, name = ("mse", "MSE") if history["valid_mse"].notna().any() else ("loss", "loss")
    ax.plot(history["epoch"], history[f"train_{column}"], marker="o", label=f"train {name}")
    ax.plot(history["epoch"], history[f"valid_{column}"], marker="o", label=f"validation {name}")
    ax.set(xlabel="epoch", ylabel=name, title="Training and validation loss")
    ax.legend()
    return _save(fig, path)


def rating_distribution(counts: pd.DataFrame, path: str) -> str:
    """Bar chart of ``rating`` → ``count`` (training split)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.barplot(data=counts, x="rating", y="count", color="steelblue", ax=ax)
    ax.set(xlabel="rating", ylabel="ratings", title="Rating distribution (training split)")
    return _save(fig, path)


def predicted_vs_actual(sample: pd.DataFrame, path: str) -> str:
    """Predicted rating per actual rating (box plots over a sample of held-out rows)."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.boxplot(data=sample, x="rating", y="prediction", color="lightsteelblue", fliersize=1, ax=ax)
    ax.set(xlabel="actual rating", ylabel="predicted rating",
           title=f"Predicted vs actual ({len(sample):,} held-out ratings)")
    return _save(fig, path)


def pca_scatter(titles: np.ndarray, coords: np.ndarray, path: str, n_labels: int = 40) -> str:
    """First two principal components of popular movies' factors, the first ``n_labels`` labelled."""
    fig, ax = plt.subplots(figsize=(10, 8))
    ax.scatter(coords[:, 0], coords[:, 1], s=12, alpha=0.4, color="grey")
    for i in range(min(n_labels, len(titles))):
        ax.scatter(coords[i, 0], coords[i, 1], s=18, color="crimson")
        ax.annotate(str(titles[i])[:30], (coords[i, 0], coords[i, 1]), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set(xlabel="component 1", ylabel="component 2", title="Movie factors: first two principal components")
    return _save(fig, path)


def bias_bars(extremes: Dict[str, pd.DataFrame], path: str, n: int = 10) -> str:
    """Horizontal bars: the movies with the highest and the lowest learned bias."""
    top, bottom = extremes["highest"].head(n), extremes["lowest"].head(n)
    frame = pd.concat([top.assign(end="highest"), bottom.iloc[::-1].assign(end="lowest")], ignore_index=True)
    fig, ax = plt.subplots(figsize=(9, 0.35 * len(frame) + 1.2))
    sns.barplot(data=frame, y=frame["title"].astype(str).str.slice(0, 40), x="bias", hue="end",
                palette={"highest": "seagreen", "lowest": "indianred"}, dodge=False, ax=ax)
    ax.set(xlabel="learned movie bias", ylabel="", title="Movie biases: highest and lowest")
    return _save(fig, path)


def crosstab_heatmaps(actual: pd.DataFrame, predicted: pd.DataFrame, path: str) -> str:
    """The top raters × top movies table: actual and predicted ratings side by side."""
    fig, axes = plt.subplots(1, 2, figsize=(16, 7))
    for ax, frame, title in ((axes[0], actual, "actual"), (axes[1], predicted, "predicted")):
        labels = [str(c)[:20] for c in frame.columns]
        sns.heatmap(frame.astype(float), ax=ax, vmin=0.5, vmax=5.0, cmap="viridis", annot=True, fmt=".1f",
                    annot_kws={"fontsize": 6}, xticklabels=labels, cbar=title == "predicted")
        ax.set(title=f"{title} ratings", xlabel="", ylabel="user")
        ax.tick_params(axis="x", labelsize=7, rotation=90)
    return _save(fig, path)

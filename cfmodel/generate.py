"""Synthetic MovieLens-format ratings from planted factors: the demo's and tests' data (with
``generate.feedback: implicit``, an event log: ``events.csv``, see :func:`event_blocks`).

Each user and movie gets latent factors and a bias; a rating is
``mean + user bias + movie bias + factors · factors + noise``, rounded to half
stars in 0.5..5.0. Movie popularity and user activity follow power laws, as in
MovieLens, so a few movies and users dominate. Users are generated in blocks,
so memory stays bounded whatever the number of rows; the output is the same
for the same seed and sizes.

Command line::

    cf-generate --set generate.n_ratings=1000000 --set generate.output=data/gen1m
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import List, Optional, Sequence

import numpy as np
import pandas as pd

from cfmodel.config import GenerateConfig

LOG = logging.getLogger(__name__)

GENRES = ["Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller",
          "War", "Western"]
GLOBAL_MEAN = 3.5
# Draws per block: bounds the generator's memory (a few hundred MB at most).
DRAWS_PER_BLOCK = 2_000_000


@dataclass
class PlantedModel:
    """The ground truth behind generated ratings (for tests and quality checks)."""

    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: np.ndarray
    item_factors: np.ndarray
    user_bias: np.ndarray
    item_bias: np.ndarray
    item_popularity: np.ndarray
    mean: float = GLOBAL_MEAN

    def expected(self, user_idx: np.ndarray, item_idx: np.ndarray) -> np.ndarray:
        """Noise-free rating (before rounding and clipping) for index pairs."""
        dot = np.einsum("ij,ij->i", self.user_factors[user_idx], self.item_factors[item_idx])
        return self.mean + self.user_bias[user_idx] + self.item_bias[item_idx] + dot


def planted_model(cfg: GenerateConfig) -> PlantedModel:
    """Draw the planted factors, biases, ids and popularity for a config."""
    rng = np.random.default_rng([cfg.seed, 0])
    # Factor scale chosen so the dot product has a standard deviation of about 0.8 stars.
    scale = (0.8 ** 2 / cfg.n_factors) ** 0.25
    # Zipf-like popularity by rank (exponent popularity_skew, 1 as in MovieLens; 0: every movie drawn alike,
    # so taste alone decides), ranks shuffled over the movies.
    popularity = rng.permutation((np.arange(cfg.n_items) + 5.0) ** -cfg.popularity_skew)
    # Sparse movie ids, like MovieLens' (1..163949 for 9k movies).
    item_ids = np.sort(rng.choice(np.arange(1, cfg.n_items * 15 + 1), cfg.n_items, replace=False))
    return PlantedModel(
        user_ids=np.arange(1, cfg.n_users + 1, dtype=np.int64),
        item_ids=item_ids.astype(np.int64),
        user_factors=rng.normal(0, scale, (cfg.n_users, cfg.n_factors)),
        item_factors=rng.normal(0, scale, (cfg.n_items, cfg.n_factors)),
        user_bias=rng.normal(0, 0.35, cfg.n_users),
        item_bias=rng.normal(0, 0.45, cfg.n_items),
        item_popularity=popularity / popularity.sum(),
    )


def _ratings_per_user(cfg: GenerateConfig, rng: np.random.Generator) -> np.ndarray:
    activity = rng.pareto(1.2, cfg.n_users) + 1.0
    floor = max(1, min(20, cfg.n_ratings // cfg.n_users // 2))
    cap = max(floor, cfg.n_items // 3)
    # Scale so that the clipped counts add up to the requested total (when feasible).
    scale = cfg.n_ratings / activity.sum()
    for _ in range(30):
        counts = np.clip(np.round(activity * scale), floor, cap)
        if counts.sum() >= cfg.n_ratings or counts.min() >= cap:
            break
        scale *= cfg.n_ratings / counts.sum()
    return counts.astype(np.int64)


def generate_blocks(cfg: GenerateConfig, model: Optional[PlantedModel] = None):
    """Yield ratings as DataFrames (``userId, movieId, rating, timestamp``), one per user block.

    Each user rates distinct movies drawn by popularity; memory per block is
    bounded by ``DRAWS_PER_BLOCK``.
    """
    model = model or planted_model(cfg)
    counts = _ratings_per_user(cfg, np.random.default_rng([cfg.seed, 1]))
    cdf = np.cumsum(model.item_popularity)
    # Over-draw so that, after removing repeats, most users reach their count.
    draws = counts * 4 + 10
    start, block = 0, 0
    while start < cfg.n_users:
        stop = start + 1
        total = draws[start]
        while stop < cfg.n_users and total + draws[stop] <= DRAWS_PER_BLOCK:
            total += draws[stop]
            stop += 1
        rng = np.random.default_rng([cfg.seed, 2, block])
        users = np.repeat(np.arange(start, stop), draws[start:stop])
        items = np.minimum(np.searchsorted(cdf, rng.random(len(users))), cfg.n_items - 1)
        key = users * cfg.n_items + items
        _, first = np.unique(key, return_index=True)
        first.sort()  # keep draw order, so truncation below is a random subset
        users, items = users[first], items[first]
        rank = np.arange(len(users)) - np.searchsorted(users, users)
        keep = rank < counts[users]
        users, items = users[keep], items[keep]
        noise = rng.normal(0, cfg.noise, len(users))
        raw = model.expected(users, items) + noise
        rating = np.clip(np.round(raw * 2) / 2, 0.5, 5.0)
        # Each user is active over a random span between 2000 and 2016.
        t0 = rng.integers(946_684_800, 1_451_606_400, stop - start)
        ts = t0[users - start] + rng.integers(0, 86_400 * 365, len(users))
        yield pd.DataFrame({
            "userId": model.user_ids[users],
            "movieId": model.item_ids[items],
            "rating": rating,
            "timestamp": ts,
        })
        start, block = stop, block + 1


# Implicit feedback: a user acts on the drawn movies the planted model rates at least this, and acts again
# on average (rating - LIKED_FROM + 0.5) more times (views, plays), so counts carry taste too.
LIKED_FROM = 4.0


def event_blocks(cfg: GenerateConfig, model: Optional[PlantedModel] = None):
    """Yield events as DataFrames (``userId, movieId, timestamp``): of the pairs :func:`generate_blocks`
    draws, those the planted model rates at least :data:`LIKED_FROM`, each repeated ``1 + Poisson`` times a
    few days apart. Taste decides which drawn movies a user acts on, popularity which are drawn."""
    rng = np.random.default_rng([cfg.seed, 4])
    for frame in generate_blocks(cfg, model):
        liked = frame[frame["rating"] >= LIKED_FROM]
        repeats = 1 + rng.poisson(liked["rating"].to_numpy() - LIKED_FROM + 0.5)
        events = liked.loc[liked.index.repeat(repeats), ["userId", "movieId", "timestamp"]]
        events["timestamp"] += rng.integers(0, 86_400 * 30, len(events))
        yield events


def movies_frame(cfg: GenerateConfig, model: PlantedModel) -> pd.DataFrame:
    """``movieId, title, genres`` with genres read off the planted factors."""
    rng = np.random.default_rng([cfg.seed, 3])
    years = rng.integers(1930, 2017, cfg.n_items)
    genres: List[str] = []
    for i in range(cfg.n_items):
        # Genre = the sign pattern of the first factors, so similar movies share genres.
        codes = [(2 * k + int(model.item_factors[i, k] > 0)) % len(GENRES)
                 for k in range(min(2, cfg.n_factors))]
        genres.append("|".join(sorted({GENRES[c] for c in codes})))
    titles = [f"Synthetic Movie {mid} ({year})" for mid, year in zip(model.item_ids, years)]
    return pd.DataFrame({"movieId": model.item_ids, "title": titles, "genres": genres})


def generate(cfg: GenerateConfig, output_dir: Optional[str] = None) -> dict:
    """Write ``ratings.csv`` and ``movies.csv`` into a local directory.

    Returns
    -------
    dict
        Paths and the number of rating rows written.
    """
    out = output_dir or cfg.output
    os.makedirs(out, exist_ok=True)
    model = planted_model(cfg)
    implicit = cfg.feedback == "implicit"
    ratings_path = os.path.join(out, "events.csv" if implicit else "ratings.csv")
    tmp = ratings_path + ".tmp"
    rows = 0
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        fh.write("userId,movieId,timestamp\n" if implicit else "userId,movieId,rating,timestamp\n")
        for frame in (event_blocks if implicit else generate_blocks)(cfg, model):
            frame.to_csv(fh, header=False, index=False, float_format="%.1f")
            rows += len(frame)
    os.replace(tmp, ratings_path)
    if rows < 0.95 * cfg.n_ratings and not implicit:
        LOG.warning("asked for %d ratings but %d users x %d movies allow only %d distinct pairs "
                    "at this popularity skew; raise n_users or n_items", cfg.n_ratings, cfg.n_users,
                    cfg.n_items, rows)
    movies_path = os.path.join(out, "movies.csv")
    movies_frame(cfg, model).to_csv(movies_path, index=False)
    LOG.info("wrote %d %s to %s and %d movies to %s", rows, "events" if implicit else "ratings", ratings_path,
             cfg.n_items, movies_path)
    return {"ratings": ratings_path, "movies": movies_path, "rows": rows}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``cf-generate``: write demo data as configured in the ``generate`` section."""
    from cfmodel.cli import job_parser, run_main, start_job

    def body(args_list: List[str]) -> int:
        args = job_parser("Generate synthetic MovieLens-format ratings.").parse_args(args_list)
        cfg = start_job(args).generate
        result = generate(cfg)
        print(f"generated {result['rows']} ratings: {result['ratings']}")
        return 0

    return run_main(body, argv)


if __name__ == "__main__":
    raise SystemExit(main())

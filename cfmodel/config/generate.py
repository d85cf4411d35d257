"""The ``generate`` section: the demo's planted data."""
from __future__ import annotations

from dataclasses import dataclass

from cfmodel.errors import require as _require


@dataclass
class GenerateConfig:
    """Synthetic MovieLens-format ratings (or, ``feedback: implicit``, events) from planted factors (the demo's
    input)."""

    output: str = "data/demo"
    n_users: int = 2000
    n_items: int = 3000
    n_ratings: int = 200_000
    n_factors: int = 8
    noise: float = 0.5
    seed: int = 42
    feedback: str = "explicit"
    popularity_skew: float = 1.0

    def __post_init__(self) -> None:
        _require(self.feedback in ("explicit", "implicit"),
                 f"generate.feedback must be explicit or implicit, got {self.feedback!r}")
        _require(self.n_users >= 1, "generate.n_users must be >= 1")
        _require(self.n_items >= 2, "generate.n_items must be >= 2")
        _require(self.n_ratings >= self.n_users, "generate.n_ratings must be >= generate.n_users")
        _require(self.n_factors >= 1, "generate.n_factors must be >= 1")
        _require(self.noise >= 0, "generate.noise must be >= 0")
        _require(self.popularity_skew >= 0, "generate.popularity_skew must be >= 0")

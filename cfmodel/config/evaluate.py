"""The ``evaluate`` section: metrics, baselines and the report."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import List, Optional, Union

from cfmodel.errors import require as _require

BASELINES = ("global_mean", "biases", "popular", "als", "implicit_als", "ease")
DEFAULT_BASELINES = ("global_mean", "biases", "popular", "als")
# On events (implicit feedback) the baselines that need ratings give way: ALS to implicit ALS (the counts as
# confidence) and EASE, the others to nothing.
IMPLICIT_BASELINES = {"global_mean": (), "biases": (), "als": ("implicit_als", "ease")}


@dataclass
class EvaluateConfig:
    """Metrics, baselines and the interpretation report (``cf-report``); keys in docs/configuration.md."""

    model: str = "data/model"
    data: str = "data/prepared"
    output: str = "data/report"
    k: int = 10
    relevance_threshold: Optional[float] = 4.0
    baselines: List[str] = field(default_factory=lambda: list(DEFAULT_BASELINES))
    bias_reg: float = 5.0
    als_n_factors: int = 10
    als_reg: float = 0.1
    als_max_iter: int = 10
    implicit_als_n_factors: List[int] = field(default_factory=lambda: [32, 64])
    implicit_als_regs: List[float] = field(default_factory=lambda: [0.01, 0.1])
    implicit_als_alphas: List[float] = field(default_factory=lambda: [1.0, 10.0, 40.0])
    ease_lambda: float = 300.0
    ease_max_items: int = 20_000
    titles: Optional[str] = None
    top_movies: int = 500
    similar_to: List[Union[int, str]] = field(default_factory=list)
    table_size: int = 15
    sample_rows: int = 20_000
    seed: int = 42
    plots: bool = True
    max_valid_rmse: Optional[float] = None

    def __post_init__(self) -> None:
        _require(self.k >= 1, "evaluate.k must be >= 1")
        bad = [b for b in self.baselines if b not in BASELINES]
        _require(not bad, f"evaluate.baselines must be from {BASELINES}, got {bad}")
        _require(self.bias_reg >= 0 and self.als_reg >= 0, "evaluate.bias_reg and evaluate.als_reg must be >= 0")
        _require(self.als_n_factors >= 1 and self.als_max_iter >= 1,
                 "evaluate.als_n_factors and als_max_iter must be >= 1")
        _require(bool(self.implicit_als_n_factors and self.implicit_als_regs and self.implicit_als_alphas),
                 "evaluate.implicit_als_n_factors, implicit_als_regs and implicit_als_alphas must not be empty")
        _require(self.ease_lambda > 0 and self.ease_max_items >= 1,
                 "evaluate.ease_lambda must be > 0 and evaluate.ease_max_items >= 1")
        _require(self.top_movies >= 3 and self.table_size >= 1 and self.sample_rows >= 1,
                 "evaluate.top_movies must be >= 3, evaluate.table_size and sample_rows >= 1")
        _require(self.max_valid_rmse is None or self.max_valid_rmse > 0, "evaluate.max_valid_rmse must be > 0")

    def for_feedback(self, feedback: str) -> "EvaluateConfig":
        """This section for the prepared data's feedback: on events every held-out pair is relevant and the
        rating baselines give way (:data:`IMPLICIT_BASELINES`)."""
        if feedback != "implicit":
            return self
        baselines: List[str] = []
        for name in self.baselines:
            for kept in IMPLICIT_BASELINES.get(name, (name,)):
                if kept not in baselines:
                    baselines.append(kept)
        return dataclasses.replace(self, relevance_threshold=None, baselines=baselines)

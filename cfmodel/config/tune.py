"""The ``tune`` section: the search ``cf-tune`` runs."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Union

from cfmodel.errors import require as _require

# Train keys a search may vary.
TUNABLE = ("n_factors", "wd", "lr", "epochs", "bias_wd", "batch_size", "ranking_weight", "rank_factors", "rank_wd",
           "negatives", "softmax_samples", "emb_dropout", "schedule")
TUNE_METRICS = ("auto", "valid_rmse", "ndcg")


@dataclass
class TuneConfig:
    """Parallel hyperparameter search (``cf-tune``), trials as Spark tasks; keys in docs/configuration.md."""

    data: str = "data/prepared"
    output: str = "data/tune"
    space: Dict[str, List[Union[int, float, str]]] = field(
        default_factory=lambda: {"n_factors": [10, 50], "wd": [0.1, 0.5, 1.5]})
    trials: int = 0                # 0: every point of the space's grid; N: N points drawn from it
    metric: str = "auto"           # auto: valid_rmse when the objective predicts ratings, else ndcg
    k: int = 10                    # ndcg@k
    relevance_threshold: Optional[float] = 4.0  # None: every validation rating is relevant
    min_epochs: int = 2            # rung 0's epochs; each rung multiplies them by eta
    eta: int = 2                   # each rung keeps the best 1/eta of the trials
    seed: int = 42

    def __post_init__(self) -> None:
        bad = sorted(k for k in self.space if k not in TUNABLE)
        _require(not bad, f"tune.space: {bad} cannot be tuned; choose from {list(TUNABLE)}")
        _require(all(isinstance(v, list) and v for v in self.space.values()),
                 "tune.space: every key needs a non-empty list of values")
        _require(self.metric in TUNE_METRICS, f"tune.metric must be one of {TUNE_METRICS}, got {self.metric!r}")
        _require(self.trials >= 0 and self.k >= 1 and self.min_epochs >= 1 and self.eta >= 2,
                 "tune.trials must be >= 0, tune.k and tune.min_epochs >= 1, tune.eta >= 2")

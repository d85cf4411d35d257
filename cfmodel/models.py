"""Collaborative-filtering networks (the fast.ai 2017 lesson's models).

Each module maps (user index, item index) batches to predicted ratings and knows
nothing of data loading or optimisation.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import torch
from torch import nn

MODELS = ("dot", "dot_bias", "embedding_net")


def _embedding(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    nn.init.normal_(emb.weight, 0.0, 0.01)
    return emb


def sigmoid_range(x: torch.Tensor, y_range: Tuple[float, float]) -> torch.Tensor:
    """Squash ``x`` into ``y_range`` (the lesson's rating range, e.g. (0, 5.5))."""
    low, high = y_range
    return torch.sigmoid(x) * (high - low) + low


class DotProduct(nn.Module):
    """Prediction = user factors · item factors."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50) -> None:
        super().__init__()
        self.u_weight = _embedding(n_users, n_factors)
        self.i_weight = _embedding(n_items, n_factors)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return (self.u_weight(users) * self.i_weight(items)).sum(1)


class DotProductBias(nn.Module):
    """Prediction = sigmoid_range(user · item + user bias + item bias)."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50,
                 y_range: Tuple[float, float] = (0.0, 5.5)) -> None:
        super().__init__()
        self.y_range = tuple(y_range)
        self.u_weight = _embedding(n_users, n_factors)
        self.i_weight = _embedding(n_items, n_factors)
        self.u_bias = _embedding(n_users, 1)
        self.i_bias = _embedding(n_items, 1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        dot = (self.u_weight(users) * self.i_weight(items)).sum(1)
        return sigmoid_range(dot + self.u_bias(users).squeeze(1) + self.i_bias(items).squeeze(1), self.y_range)


class EmbeddingNet(nn.Module):
    """Concatenated user and item embeddings -> hidden layers with dropout -> sigmoid_range."""

    def __init__(self, n_users: int, n_items: int, n_factors: int = 50, hidden: Sequence[int] = (10,),
                 dropouts: Sequence[float] = (0.5,), emb_dropout: float = 0.05,
                 y_range: Tuple[float, float] = (0.0, 5.5)) -> None:
        super().__init__()
        if len(dropouts) != len(hidden):
            raise ValueError(f"need one dropout per hidden layer, got hidden={list(hidden)} dropouts={list(dropouts)}")
        self.y_range = tuple(y_range)
        self.u_weight = _embedding(n_users, n_factors)
        self.i_weight = _embedding(n_items, n_factors)
        layers: list = [nn.Dropout(emb_dropout)]
        width = 2 * n_factors
        for size, p in zip(hidden, dropouts):
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(p)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        return self.score_embeddings(self.u_weight(users), self.i_weight(items))

    def score_embeddings(self, u_emb: torch.Tensor, i_emb: torch.Tensor) -> torch.Tensor:
        """Predictions from embedding rows (paired), as the scoring job uses them."""
        return sigmoid_range(self.layers(torch.cat([u_emb, i_emb], dim=1)).squeeze(1), self.y_range)


def build_model(name: str, n_users: int, n_items: int, n_factors: int, y_range: Tuple[float, float],
                hidden: Sequence[int] = (10,), dropouts: Sequence[float] = (0.5,),
                emb_dropout: float = 0.05) -> nn.Module:
    """The model called ``name`` (one of ``MODELS``), sized for the data."""
    if name == "dot":
        return DotProduct(n_users, n_items, n_factors)
    if name == "dot_bias":
        return DotProductBias(n_users, n_items, n_factors, y_range)
    if name == "embedding_net":
        return EmbeddingNet(n_users, n_items, n_factors, hidden, dropouts, emb_dropout, y_range)
    raise ValueError(f"unknown model {name!r}; choose one of {MODELS}")


def embedding_net_layers(args: dict, state: dict) -> EmbeddingNet:
    """An :class:`EmbeddingNet` with only its layers loaded (``state``: name -> array), for scoring
    embedding rows that come from elsewhere (the exported factor tables)."""
    model = build_model("embedding_net", 1, 1, args["n_factors"], tuple(args["y_range"]), args["hidden"],
                        args["dropouts"], args["emb_dropout"])
    model.layers.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()})
    return model.eval()

"""Collaborative-filtering networks (the fast.ai 2017 lesson's models) and their arguments.

Every module holds a user table and an item table (factors, and biases where
the model has them) and says how rows of those tables combine into a score:
:meth:`CFModule.score_pairs` for paired rows, :meth:`CFModule.score_block` for
every user of a block against every item. Training, prediction, top-N scoring,
evaluation and the baselines all go through these two methods, so the maths
lives here alone. Modules know nothing of data loading or optimisation.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from cfmodel.errors import ConfigError

MODELS = ("dot", "dot_bias", "embedding_net")


def sigmoid_range(x: torch.Tensor, y_range: Tuple[float, float]) -> torch.Tensor:
    """Squash ``x`` into ``y_range`` (the lesson's rating range, e.g. (0, 5.5))."""
    low, high = y_range
    return torch.sigmoid(x) * (high - low) + low


@dataclass
class ModelArgs:
    """Everything that defines a model's architecture; saved in ``model.pt`` beside the weights.

    ``y_range`` is the prediction range of the models that squash their output
    (``dot_bias``, ``embedding_net``); ``hidden``, ``dropouts`` and
    ``emb_dropout`` shape ``embedding_net`` only. ``rank_factors`` (the
    ``hybrid`` objective's ranking head, bilinear models only): when not None,
    lists are ranked by ``u·i + u_r·i_r + r_i`` (this many extra factors ``u_r``,
    ``i_r`` and an item ranking bias ``r_i``) while ratings are still predicted
    from ``u·i`` and the rating biases.
    """

    name: str
    n_users: int
    n_items: int
    n_factors: int = 50
    y_range: List[float] = field(default_factory=lambda: [0.0, 5.5])
    hidden: List[int] = field(default_factory=lambda: [10])
    dropouts: List[float] = field(default_factory=lambda: [0.5])
    emb_dropout: float = 0.05
    rank_factors: Optional[int] = None

    def __post_init__(self) -> None:
        if self.name not in MODELS:
            raise ConfigError(f"unknown model {self.name!r}; choose one of {MODELS}")
        if self.rank_factors is not None and self.name == "embedding_net":
            raise ConfigError("a ranking head (train.objective=hybrid) needs a bilinear model: dot or dot_bias")
        if len(self.dropouts) != len(self.hidden):
            raise ConfigError(f"need one dropout per hidden layer, got hidden={list(self.hidden)} "
                              f"dropouts={list(self.dropouts)}")
        self.y_range = [float(v) for v in self.y_range]

    def build(self) -> "CFModule":
        """A freshly initialised module of this architecture."""
        return {"dot": DotProduct, "dot_bias": DotProductBias, "embedding_net": EmbeddingNet}[self.name](self)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "ModelArgs":
        return cls(**data)

    def head_only(self) -> "ModelArgs":
        """The same architecture with empty tables: what combines factor rows that come from elsewhere."""
        return dataclasses.replace(self, n_users=0, n_items=0)


def _embedding(n: int, dim: int) -> nn.Embedding:
    emb = nn.Embedding(n, dim)
    if n:
        nn.init.normal_(emb.weight, 0.0, 0.01)
    return emb


def _bias_term(raw: torch.Tensor, bias: Optional[torch.Tensor]) -> torch.Tensor:
    return raw if bias is None else raw + bias


class CFModule(nn.Module):
    """Base of the models: user and item tables, and how their rows combine into a score.

    ``bilinear`` models score ``output(u · i + b_u + b_i)`` with ``output``
    increasing, so a top-N scorer may rank by the raw sum and apply
    :meth:`output` to the N chosen only.
    """

    bilinear = False

    def __init__(self, args: ModelArgs, biases: bool) -> None:
        super().__init__()
        self.args = args
        self.u_weight = _embedding(args.n_users, args.n_factors)
        self.i_weight = _embedding(args.n_items, args.n_factors)
        if biases:
            self.u_bias = _embedding(args.n_users, 1)
            self.i_bias = _embedding(args.n_items, 1)
        if args.rank_factors is not None:
            self.u_rank = _embedding(args.n_users, args.rank_factors)
            self.i_rank = _embedding(args.n_items, args.rank_factors)
            self.r_bias = _embedding(args.n_items, 1)

    @property
    def has_rank_head(self) -> bool:
        return self.args.rank_factors is not None

    def tables(self, side: str) -> Tuple[nn.Embedding, Optional[nn.Embedding]]:
        """(factor table, bias table or None) of ``side`` (``user`` or ``item``)."""
        prefix = {"user": "u", "item": "i"}[side]
        return getattr(self, f"{prefix}_weight"), getattr(self, f"{prefix}_bias", None)

    def embeddings(self) -> List[Tuple[str, bool, nn.Embedding]]:
        """``(side, is_bias, table)`` for every table, in registration order (for L2 on a batch's rows)."""
        found = []
        for side in ("user", "item"):
            weight, bias = self.tables(side)
            found.append((side, False, weight))
            if bias is not None:
                found.append((side, True, bias))
        if self.has_rank_head:
            found += [("user", False, self.u_rank), ("item", False, self.i_rank), ("item", True, self.r_bias)]
        order = {id(m): n for n, m in enumerate(self.children())}
        return sorted(found, key=lambda t: order[id(t[2])])

    def bias_parameters(self) -> List[nn.Parameter]:
        """The parameters that decay by ``bias_wd``: the models have no global-mean term, so the
        biases carry the mean rating, and shrinking them towards 0 would bias every prediction."""
        return [table.weight for _, is_bias, table in self.embeddings() if is_bias]

    def rank_head_parameters(self) -> List[nn.Parameter]:
        """The ranking head's extra factors (they decay by ``rank_wd``, not the rating tables' ``wd``)."""
        return [self.u_rank.weight, self.i_rank.weight] if self.has_rank_head else []

    # -- ranking: what the lists are made from ------------------------------------
    def rank_rows(self, side: str, idx: torch.Tensor,
                  factors: Optional[torch.Tensor] = None) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(features, bias or None) that rank ``side``'s rows: the ranking head's when the model has one
        (the rating factors then the ranking factors; the item ranking bias), else :meth:`rows`.
        ``factors``: the rating factor rows of ``idx`` when the caller has gathered them already (a
        second lookup of a large table costs a second gradient pass over all of it)."""
        if not self.has_rank_head:
            rows, bias = self.rows(side, idx)
            return (rows if factors is None else factors), bias
        weight, _ = self.tables(side)
        extra, bias = self.head_rows(side, idx)
        return torch.cat([weight(idx) if factors is None else factors, extra], dim=1), bias

    def head_rows(self, side: str, idx: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(the ranking head's own factor rows, the item ranking bias or None) of ``side``'s ``idx``."""
        extra = self.u_rank if side == "user" else self.i_rank
        return extra(idx), None if side == "user" else self.r_bias(idx).squeeze(1)

    def rank_logits_block(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Ranking scores of every user index against every item index: ``(len(users), len(items))``."""
        (u, ub), (i, ib) = self.rank_rows("user", users), self.rank_rows("item", items)
        return self.raw_block(u, i, ub, ib)

    def rows(self, side: str, idx: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
        """(factor rows, bias rows or None) of ``side`` for indices ``idx``."""
        weight, bias = self.tables(side)
        return weight(idx), None if bias is None else bias(idx).squeeze(1)

    def forward(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        (u, u_bias), (i, i_bias) = self.rows("user", users), self.rows("item", items)
        return self.score_pairs(u, i, u_bias, i_bias)

    def head_state(self) -> Dict[str, torch.Tensor]:
        """The weights that are not table rows (the network's layers), for :meth:`ModelArgs.head_only`."""
        tables = {n for n, m in self.named_children() if isinstance(m, nn.Embedding)}
        return {k: v for k, v in self.state_dict().items() if k.split(".")[0] not in tables}

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        """The final transform of a bilinear model's raw sum (identity unless overridden)."""
        return raw

    def raw_pairs(self, u: torch.Tensor, i: torch.Tensor, u_bias: Optional[torch.Tensor] = None,
                  i_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of paired rows (``u[k]`` with ``i[k]``) before :meth:`output`; biases may be None (0)."""
        raise NotImplementedError

    def raw_block(self, u: torch.Tensor, i: torch.Tensor, u_bias: Optional[torch.Tensor] = None,
                  i_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of every user row against every item row, before :meth:`output`: ``(len(u), len(i))``."""
        raise NotImplementedError

    def score_pairs(self, u: torch.Tensor, i: torch.Tensor, u_bias: Optional[torch.Tensor] = None,
                    i_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of paired rows: ``u[k]`` with ``i[k]``; biases may be None (taken as 0)."""
        return self.output(self.raw_pairs(u, i, u_bias, i_bias))

    def score_block(self, u: torch.Tensor, i: torch.Tensor, u_bias: Optional[torch.Tensor] = None,
                    i_bias: Optional[torch.Tensor] = None) -> torch.Tensor:
        """Scores of every user row against every item row: ``(len(u), len(i))``."""
        return self.output(self.raw_block(u, i, u_bias, i_bias))


class DotProduct(CFModule):
    """Prediction = user factors · item factors (plus biases where a factor table carries them)."""

    bilinear = True

    def __init__(self, args: ModelArgs, biases: bool = False) -> None:
        super().__init__(args, biases)

    def raw_pairs(self, u, i, u_bias=None, i_bias=None):
        return _bias_term(_bias_term((u * i).sum(1), u_bias), i_bias)

    def raw_block(self, u, i, u_bias=None, i_bias=None):
        raw = u @ i.T if i_bias is None else torch.addmm(i_bias[None, :], u, i.T)
        return raw if u_bias is None else raw + u_bias[:, None]


class DotProductBias(DotProduct):
    """Prediction = sigmoid_range(user · item + user bias + item bias)."""

    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args, biases=True)

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(raw, self.args.y_range)


class EmbeddingNet(CFModule):
    """Concatenated user and item embeddings -> hidden layers with dropout -> sigmoid_range."""

    # User × item pairs per forward pass in :meth:`score_block` (bounds its memory).
    pairs_per_pass = 1 << 20

    def __init__(self, args: ModelArgs) -> None:
        super().__init__(args, biases=False)
        layers: list = [nn.Dropout(args.emb_dropout)]
        width = 2 * args.n_factors
        for size, p in zip(args.hidden, args.dropouts):
            layers += [nn.Linear(width, size), nn.ReLU(), nn.Dropout(p)]
            width = size
        layers.append(nn.Linear(width, 1))
        self.layers = nn.Sequential(*layers)

    def output(self, raw: torch.Tensor) -> torch.Tensor:
        return sigmoid_range(raw, self.args.y_range)

    def raw_pairs(self, u, i, u_bias=None, i_bias=None):
        return self.layers(torch.cat([u, i], dim=1)).squeeze(1)

    def raw_block(self, u, i, u_bias=None, i_bias=None):
        # The net has no dot product: run it over every (user, item) pair, a few users at a time.
        n_items = i.shape[0]
        per = max(1, self.pairs_per_pass // max(n_items, 1))
        blocks = []
        for s in range(0, len(u), per):
            block = u[s:s + per]
            pairs = self.raw_pairs(block.repeat_interleave(n_items, dim=0), i.repeat(len(block), 1))
            blocks.append(pairs.view(len(block), n_items))
        return torch.cat(blocks) if blocks else u.new_zeros((0, n_items))


def head_module(args: ModelArgs, state: Dict[str, Any]) -> CFModule:
    """A module of ``args``' architecture with empty tables and ``state`` (name -> tensor or array) loaded."""
    module = args.head_only().build()
    module.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=False)
    return module.eval()


def dot_head() -> CFModule:
    """The head of a plain dot product (biases added when the factor tables carry them): how the
    baselines' factor tables (ALS, the bias model, popularity) are scored. A head has no tables,
    so it serves factors of any size."""
    return head_module(ModelArgs("dot", 0, 0, 1), {})

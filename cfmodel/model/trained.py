"""A trained model: what the train stage writes, and what every later stage reads.

In the spirit of Spark's ``ALS`` → ``ALSModel``: :class:`TrainedModel` is loaded
once from a train output (a path or any URL Hadoop reads) and holds the model's
arguments, its module (weights), the id maps and the factor tables. Scoring,
evaluation and the report ask it for predictions, blocks of scores and top-N
lists; none of them rebuilds the model's maths.
"""
from __future__ import annotations

import functools
import hashlib
import io
import pickle
import json
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import numpy as np
import pandas as pd
import torch

from cfmodel.errors import CfError, InputError
from cfmodel.model.factors import factor_table, id_type_of, ids_from, ids_payload, write_factor_table
from cfmodel.model.fold_in import CHUNK_ELEMENTS, fold_in, fold_in_list_items, fold_in_lists, in_chunks, user_sample
from cfmodel.model.fold_in_adam import fold_in_adam
from cfmodel.model.nets import CFModule, ModelArgs, dot_head, head_module
from cfmodel.model.topn import BlockScorer, ItemTable
from cfmodel import objectives


def weights_digest(args: ModelArgs, module: CFModule) -> str:
    """SHA-256 of what defines a model: its arguments and every weight's bytes (not the file's bytes,
    which differ between two saves of the same weights)."""
    digest = hashlib.sha256(json.dumps(args.to_dict(), sort_keys=True).encode("utf-8"))
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode("utf-8"))
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


@dataclass
class TrainedModel:
    """A model with its id maps; ``module`` is on the CPU, in eval mode.

    ``extra`` carries what the trainer recorded beside the weights
    (``valid_mse``, ``data``: the prepare output's fingerprint).
    """

    args: ModelArgs
    module: CFModule
    user_ids: np.ndarray
    item_ids: np.ndarray
    extra: Dict[str, Any] = field(default_factory=dict)

    # -- reading and writing ----------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes, source: str = "model.pt") -> "TrainedModel":
        """Rebuild from ``model.pt``'s bytes (loaded with ``weights_only=True``)."""
        try:
            payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, ValueError, pickle.UnpicklingError) as exc:
            # A truncated or corrupt file (a copy cut short, a full disk): say which, not torch's traceback.
            detail = str(exc).split(". ")[0].splitlines()[0] if str(exc) else "truncated"
            raise InputError(f"{source}: not a readable model file ({detail}); retrain, or copy it again") from exc
        if not isinstance(payload, dict) or "model_args" not in payload:
            raise InputError(f"{source}: no model_args; written by an older cfmodel? Retrain the model")
        args = ModelArgs.from_dict(payload["model_args"])
        module = args.build()
        module.load_state_dict(payload["state_dict"])
        keys = ("state_dict", "model_args", "user_ids", "item_ids", "id_types")
        extra = {k: v for k, v in payload.items() if k not in keys}
        # Files from before other id types held int32 ids (saved as int64 tensors).
        types = payload.get("id_types") or {"user": "int", "item": "int"}
        return cls(args, module.eval(), ids_from(payload["user_ids"], types["user"]),
                   ids_from(payload["item_ids"], types["item"]), extra)

    @classmethod
    def load(cls, path: str) -> "TrainedModel":
        """From a local train output directory (or its ``model.pt``)."""
        file = path if path.endswith(".pt") else os.path.join(path, "model.pt")
        if not os.path.exists(file):
            raise InputError(f"model not found: {file}")
        with open(file, "rb") as fh:
            return cls.from_bytes(fh.read(), file)

    @classmethod
    def read(cls, storage: Any, path: str) -> "TrainedModel":
        """From a train output at any URL, through :class:`cfmodel.storage.Storage`."""
        file = f"{path.rstrip('/')}/model.pt"
        if not storage.exists(file):
            raise InputError(f"model not found: {file}")
        return cls.from_bytes(storage.read_bytes(file), file)

    def save(self, out_dir: str) -> None:
        """Write ``model.pt``, ``user_factors/`` and ``item_factors/`` (and, for a model with a ranking
        head, ``rank_user_factors/`` and ``rank_item_factors/``, what its lists are made from) under a
        local ``out_dir``."""
        # contiguous: a trainer may have given a side's tables one storage (column ranges of it).
        payload = {"state_dict": {k: v.detach().cpu().contiguous() for k, v in self.module.state_dict().items()},
                   "model_args": self.args.to_dict(), "model_version": self.version,
                   "user_ids": ids_payload(self.user_ids), "item_ids": ids_payload(self.item_ids),
                   "id_types": {"user": id_type_of(self.user_ids), "item": id_type_of(self.item_ids)}, **self.extra}
        # Through a Python file: torch.save to a path reports a full disk without its errno.
        with open(os.path.join(out_dir, "model.pt"), "wb") as fh:
            torch.save(payload, fh)
        for side, ids in (("user", self.user_ids), ("item", self.item_ids)):
            write_factor_table(factor_table(ids, *self.factors(side)), out_dir, side)
            if self.module.has_rank_head:
                write_factor_table(factor_table(ids, *self.rank_factors(side)), out_dir, side, prefix="rank_")

    # -- what the model is ------------------------------------------------------
    @property
    def version(self) -> str:
        """12 hex digits of :func:`weights_digest`: equal for equal models, whoever saved them."""
        return weights_digest(self.args, self.module)[:12]

    def factors(self, side: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(factors, biases or None) of ``side`` as float32 arrays, by index."""
        weight, bias = self.module.tables(side)
        return (weight.weight.detach().float().numpy(),
                None if bias is None else bias.weight.detach().float().numpy().reshape(-1))

    def head(self) -> CFModule:
        """The module without its tables: combines factor rows that come from elsewhere (picklable, small)."""
        return head_module(self.args, self.module.head_state())

    @property
    def objective(self) -> str:
        """The training objective (``rating`` for models saved before objectives existed)."""
        return self.extra.get("objective") or "rating"

    @property
    def spec(self) -> objectives.Objective:
        """The training objective's contract (:mod:`cfmodel.objectives`)."""
        return objectives.stored(self.objective)

    @property
    def predicts_ratings(self) -> bool:
        """Whether :meth:`predict` gives ratings (``rating``, ``hybrid``) or only ranking scores."""
        return self.spec.predicts_ratings

    @property
    def list_score(self) -> str:
        """What the score of a top-N list means: ``predicted_rating`` (a rating model's lists) or
        ``ranking_score`` (ordered by the ranking objective; not on the rating scale)."""
        return self.spec.score_meaning

    def rank_factors(self, side: str) -> Tuple[np.ndarray, Optional[np.ndarray]]:
        """(features, biases or None) that rank ``side``: the ranking head's tables when there is one."""
        with torch.no_grad():
            n = self.args.n_users if side == "user" else self.args.n_items
            features, bias = self.module.rank_rows(side, torch.arange(n))
        return features.float().numpy(), None if bias is None else bias.float().numpy()

    def list_head(self) -> CFModule:
        """The head that turns the list tables into scores: the model's own, or for a ranking head
        the plain dot product (its ranking score has no output transform)."""
        return dot_head() if self.module.has_rank_head else self.head()

    # -- using it ----------------------------------------------------------------
    @torch.no_grad()
    def predict(self, users: Sequence[int], items: Sequence[int]) -> np.ndarray:
        """Scores of (user index, item index) pairs."""
        return self.module(torch.as_tensor(np.asarray(users, np.int64)),
                           torch.as_tensor(np.asarray(items, np.int64))).numpy()

    @torch.no_grad()
    def score_block(self, users: Sequence[int], items: Sequence[int]) -> np.ndarray:
        """Scores of every listed user against every listed item: ``(len(users), len(items))``."""
        u = self.module.rows("user", torch.as_tensor(np.asarray(users, np.int64)))
        i = self.module.rows("item", torch.as_tensor(np.asarray(items, np.int64)))
        return self.module.score_block(u[0], i[0], u[1], i[1]).numpy()

    # -- users the model has not seen ----------------------------------------------
    def fold_in_users(self, items: Sequence[np.ndarray], ratings: Sequence[np.ndarray], reg: float = 0.1,
                      newton_steps: int = 3, method: str = "auto") -> Tuple[np.ndarray, np.ndarray]:
        """(factors, biases) of new users from the item indices each rated and the ratings, with the items
        fixed (no retraining). Biases are 0 for a model without them. ``method``: ``adam`` refits them as
        the training run's optimiser would have, in expectation (:mod:`cfmodel.model.fold_in_adam`);
        ``ridge`` solves for the optimum (:mod:`cfmodel.model.fold_in`, ``reg`` and ``newton_steps``);
        ``auto`` is ``adam`` where the model records its optimiser's run, else ``ridge``."""
        return self.fold_in_solver(reg, newton_steps, method=method)(items, ratings)

    def fold_in_solver(self, reg: float = 0.1, newton_steps: int = 3, side: str = "user",
                       method: str = "auto") -> Callable:
        """:meth:`fold_in_users` as a small picklable function of ``(indices, ratings)`` (the other side's
        table and the model's range bound in): what the score stage broadcasts to its executors. With
        ``side="item"`` it solves new movies against the fixed user factors, from the users who rated them."""
        if not getattr(self.module, "bilinear", False) or self.module.has_rank_head:
            raise CfError(f"fold-in needs a dot-product model trained on ratings (dot or dot_bias with the rating "
                          f"objective), not {self.args.name} with objective {self.objective}")
        return self.fold_in_solver_unchecked(reg, newton_steps, side, method)

    def fold_in_method(self, method: str = "auto") -> str:
        """``method`` with ``auto`` resolved: ``adam`` when the model records its optimiser's run (trained by
        AdamW with decoupled decay), else ``ridge``."""
        if method not in ("auto", "adam", "ridge"):
            raise CfError(f"fold-in method must be auto, adam or ridge, not {method!r}")
        record = self.extra.get("optimizer")
        if method == "adam" and not record:
            raise CfError("fold-in method adam needs a model that records its optimiser's run (trained by this "
                          "cfmodel with wd_mode adamw); use ridge")
        return method if method != "auto" else ("adam" if record else "ridge")

    def fold_in_solver_unchecked(self, reg: float, newton_steps: int, side: str = "user",
                                 method: str = "auto") -> Callable:
        """:meth:`fold_in_solver` for any bilinear model: the rating tables of a hybrid too."""
        other = "user" if side == "item" else "item"
        weight, bias = self.module.tables(other)
        fixed_bias = None if bias is None else bias.weight.detach()[:, 0].double().numpy()
        y_range = tuple(self.args.y_range) if self.args.name == "dot_bias" else None
        fit_bias = self.module.tables(side)[1] is not None
        table = weight.weight.detach().double().numpy()
        if self.fold_in_method(method) == "adam":
            solve = functools.partial(fold_in_adam, table, fixed_bias, y_range, record=self.extra["optimizer"],
                                      fit_bias=fit_bias)
            # A quarter of the padded budget: each of the run's segments makes several ratings-long temporaries.
            return functools.partial(in_chunks, solve, width=table.shape[1] + 1, padded=False,
                                     budget=CHUNK_ELEMENTS // 4)
        solve = functools.partial(fold_in, table, fixed_bias, y_range, reg=reg, newton_steps=newton_steps,
                                  fit_bias=fit_bias)
        return functools.partial(in_chunks, solve, width=table.shape[1] + 1)

    def fold_in_list_solver(self, reg: float = 0.1, newton_steps: int = 3, method: str = "auto") -> Callable:
        """A picklable function of ``(indices, ratings)`` giving new users' list factors and biases (what
        :meth:`rank_factors`' user side holds), the items fixed: a rating model's :meth:`fold_in_solver`;
        for a hybrid the rating factors so, then its ranking head's factors by Newton steps on a full softmax
        over the rated items; for ``bpr`` and ``softmax`` models the whole vector that way
        (:func:`cfmodel.model.fold_in.fold_in_lists`). ``method`` as :meth:`fold_in_users`, for the rating
        factors."""
        if self.spec.lists_by_rating:
            return self.fold_in_solver(reg, newton_steps, method=method)
        self._require_bilinear()
        weight, bias = self.rank_factors("item")
        rating = self.fold_in_solver_unchecked(reg, newton_steps, method=method) if self.module.has_rank_head else None
        return functools.partial(fold_in_lists, rating, weight, bias, reg=reg)

    def fold_in_item_solver(self, user_counts: Optional[np.ndarray], reg: float = 0.1, newton_steps: int = 3,
                            method: str = "auto", sample_size: int = 4096, seed: int = 0) -> Callable:
        """A picklable function of ``(user indices, ratings)`` giving new items' list factors and biases (what
        :meth:`rank_factors`' item side holds), the users fixed: a rating model's :meth:`fold_in_solver` on the
        item side; for a ranking model each item's terms in every user's full softmax, estimated on
        ``sample_size`` users (:func:`cfmodel.model.fold_in.fold_in_ranking_items`). ``user_counts``: each
        known user's ratings, by index, in the ratings the new items' come from (unused by a rating model)."""
        if self.spec.lists_by_rating:
            return self.fold_in_solver(reg, newton_steps, "item", method)
        self._require_bilinear()
        users, _ = self.rank_factors("user")
        sample = user_sample(users, *self.rank_factors("item"), np.asarray(user_counts), sample_size, seed)
        rating = self.fold_in_solver_unchecked(reg, newton_steps, "item", method) if self.module.has_rank_head \
            else None
        return functools.partial(fold_in_list_items, rating, users, sample, reg=reg)

    def _require_bilinear(self) -> None:
        if not getattr(self.module, "bilinear", False):
            raise CfError(f"fold-in needs a dot-product model, not {self.args.name}")

    def fold_in_list_factors(self, items: Sequence[np.ndarray], ratings: Sequence[np.ndarray], reg: float = 0.1,
                             newton_steps: int = 3, method: str = "auto") -> np.ndarray:
        """New users' list factors (:meth:`fold_in_list_solver`) from the item indices each rated and the
        ratings."""
        return self.fold_in_list_solver(reg, newton_steps, method)(items, ratings)[0]

    @torch.no_grad()
    def predict_factors(self, factors: np.ndarray, biases: np.ndarray, items: Sequence[int]) -> np.ndarray:
        """Scores of user rows given by their factors and biases (folded in) paired with item indices."""
        i, ib = self.module.rows("item", torch.as_tensor(np.asarray(items, np.int64)))
        return self.module.score_pairs(torch.as_tensor(factors, dtype=i.dtype), i,
                                       torch.as_tensor(biases, dtype=i.dtype), ib).numpy()

    def recommend(self, users: Sequence[int], n: int, exclude: Optional[Dict[int, Sequence[int]]] = None,
                  candidate: Optional[np.ndarray] = None) -> pd.DataFrame:
        """Top-``n`` lists for user *indices* (``user_id, rank, item_id, score, fallback``) by the score stage's
        block scorer, in this process; ``exclude``: user index -> item indices never to return (what they
        rated); ``candidate`` (bool per item) limits the items."""
        weight, bias = self.rank_factors("item")
        table = ItemTable(self.item_ids, weight, np.zeros(len(weight), np.float32) if bias is None else bias,
                          np.ones(len(weight), bool) if candidate is None else candidate)
        order = np.nonzero(table.candidate)[0]
        scorer = BlockScorer(table, order, np.zeros(len(weight), np.float32), n, self.list_head(), block_size=256)
        uw, ub = self.rank_factors("user")
        users = np.asarray(users, np.int64)
        exclude = exclude or {}
        frame = pd.DataFrame({"user_id": self.user_ids[users], "features": list(uw[users]),
                              "bias": np.zeros(len(users), np.float32) if ub is None else ub[users],
                              "seen": [np.asarray(exclude.get(int(u), []), np.int32) for u in users]})
        return scorer.score_frame(frame)

    # -- by ids (cfmodel.model.by_id): what a notebook or a downstream job asks -----
    def recommend_for_users(self, ids: Sequence, n: int = 10, exclude: Optional[Dict[Any, Sequence]] = None
                            ) -> pd.DataFrame:
        """Top-``n`` lists for user *ids* (:func:`cfmodel.model.by_id.recommend_for_users`)."""
        from cfmodel.model.by_id import recommend_for_users
        return recommend_for_users(self, ids, n, exclude)

    def predict_ratings(self, pairs) -> pd.DataFrame:
        """Predicted ratings for (user id, item id) pairs (:func:`cfmodel.model.by_id.predict_ratings`)."""
        from cfmodel.model.by_id import predict_ratings
        return predict_ratings(self, pairs)


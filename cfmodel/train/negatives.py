"""Negative items for the ranking objectives: which items a user did not rate, drawn in a batch.

:class:`RatedPairs` is the training split's (user, item) pairs as sorted int64
keys (8 bytes a rating, read once, two columns only, so the Petastorm loader
still streams the ratings themselves); it answers "did this user rate this
item?" for a whole batch with one ``searchsorted``, and counts each item's
training ratings for popularity sampling. :class:`NegativeSampler` draws
items uniformly or by popularity (count^0.75, word2vec's smoothing), all
vectorised, from a generator the trainer reseeds every epoch, so a resumed run
draws what an uninterrupted one would.
"""
from __future__ import annotations

import numpy as np
import pyarrow.dataset as ds
import torch
from pyarrow import fs

from cfmodel.errors import InputError

# Rounds of redrawing the negatives that hit a rated item; what still hits after them is masked.
REDRAWS = 8


class RatedPairs:
    """The (user, item) pairs of a training split, as sorted keys ``user × n_items + item``."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, n_items: int) -> None:
        self.n_items = n_items
        self.keys = torch.unique(users.long() * n_items + items.long())  # sorted
        self.item_counts = torch.bincount(items.long(), minlength=n_items)

    @classmethod
    def from_parquet(cls, url: str, n_items: int) -> "RatedPairs":
        """Read only ``user_idx, item_idx`` of a split (any URL pyarrow reads), batch by batch."""
        filesystem, path = fs.FileSystem.from_uri(url)
        users, items = [], []
        try:
            dataset = ds.dataset(path, filesystem=filesystem, format="parquet")
            for batch in dataset.to_batches(columns=["user_idx", "item_idx"]):
                users.append(torch.from_numpy(batch.column(0).to_numpy().astype(np.int64)))
                items.append(torch.from_numpy(batch.column(1).to_numpy().astype(np.int64)))
        except (FileNotFoundError, OSError) as exc:
            raise InputError(f"{url}: cannot read the training split's pairs ({exc})") from exc
        empty = torch.empty(0, dtype=torch.long)
        return cls(torch.cat(users) if users else empty, torch.cat(items) if items else empty, n_items)

    def contains(self, users: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
        """Bool tensor: whether each (user, item) pair (same shapes) is a training rating."""
        keys = (users.long() * self.n_items + items.long()).cpu()
        if not len(self.keys):
            return torch.zeros_like(keys, dtype=torch.bool).to(users.device)
        pos = torch.searchsorted(self.keys, keys).clamp(max=len(self.keys) - 1)
        return (self.keys[pos] == keys).to(users.device)


class NegativeSampler:
    """Draw items for users: ``uniform`` or ``popularity`` (count^0.75), optionally never a rated one.

    ``log_q`` is the log-probability of each item under the sampling distribution,
    for the sampled softmax's correction.
    """

    def __init__(self, rated: RatedPairs, how: str, exclude_rated: bool, seed: int = 0) -> None:
        weights = (rated.item_counts.double() + 1.0) ** 0.75 if how == "popularity" else \
            torch.ones(rated.n_items, dtype=torch.float64)
        self.probs = (weights / weights.sum()).float()
        self.log_q = self.probs.log()
        self.uniform = how != "popularity"
        self.rated = rated
        self.exclude_rated = exclude_rated
        self.generator = torch.Generator().manual_seed(seed)

    def reseed(self, seed: int) -> None:
        self.generator.manual_seed(seed)

    def draw(self, n: int) -> torch.Tensor:
        """``n`` items from the sampling distribution (with replacement)."""
        if self.uniform:
            return torch.randint(0, self.rated.n_items, (n,), generator=self.generator)
        return torch.multinomial(self.probs, n, replacement=True, generator=self.generator)

    def for_users(self, users: torch.Tensor, k: int) -> tuple:
        """(items ``(len(users), k)``, valid mask): ``k`` negatives per user; with ``exclude_rated``,
        a draw that hits an item the user rated is redrawn (up to :data:`REDRAWS` times) and masked
        out if it still hits, so a rated item is never used as a negative."""
        users_cpu = users.cpu()
        items = self.draw(len(users_cpu) * k).view(-1, k)
        valid = torch.ones_like(items, dtype=torch.bool)
        if self.exclude_rated:
            grid = users_cpu[:, None].expand_as(items)
            hit = self.rated.contains(grid, items)
            for _ in range(REDRAWS):
                where = hit.nonzero(as_tuple=True)
                if not len(where[0]):
                    break
                # Only the draws that hit are redrawn and checked again.
                items[where] = self.draw(len(where[0]))
                hit[where] = self.rated.contains(grid[where], items[where])
            valid = ~hit
        return items.to(users.device), valid.to(users.device)

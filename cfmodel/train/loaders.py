"""Batches of (user_idx, item_idx, rating) for training, from the prepare job's Parquet.

Two loaders with one interface (``epoch(n)`` yields tensor triples):

- :class:`PetastormLoader` streams any URL Petastorm reads (``file://``,
  ``hdfs://``, ``s3://``) through ``make_batch_reader`` and
  ``petastorm.pytorch.BatchedDataLoader``, reshuffling every epoch (row-group
  order plus a shuffling buffer), with ``cur_shard``/``shard_count`` for
  data-parallel readers. Memory is bounded by the buffer, not the data.
- :class:`InMemoryLoader` reads the split once into tensors and draws a fresh
  permutation per epoch: faster when the data fits (``bench/bench_train.py``).
  On a GPU the train stage moves it into device memory (:meth:`InMemoryLoader.to`),
  so a batch is gathered there and nothing crosses the bus per step.
"""
from __future__ import annotations

import math
import warnings
from contextlib import contextmanager
from typing import Iterator, Optional, Tuple

import torch

from cfmodel.dataset import PreparedData
from cfmodel.errors import ConfigError
from cfmodel.urls import to_url

Batch = Tuple[torch.Tensor, torch.Tensor, torch.Tensor]
FIELDS = ["user_idx", "item_idx", "rating"]


@contextmanager
def _quiet_petastorm() -> Iterator[None]:
    # Petastorm 0.12 calls pyarrow APIs that pyarrow 14 marks deprecated, once per row group.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        # Petastorm wraps pyarrow's read-only buffers; our batches are only read, never written in place.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        yield


def _to_batch(b: dict) -> Batch:
    return b["user_idx"].long(), b["item_idx"].long(), b["rating"].float()


class PetastormLoader:
    """Stream a Parquet split with Petastorm, reshuffled each epoch.

    Parameters
    ----------
    url
        The split's directory (``.../train``), as a URL or local path.
    rows
        Rows in the split (from ``meta.json``), to count steps per epoch.
    batch_size, shuffle, seed
        Batching; with ``shuffle`` the row-group order and a shuffling buffer of
        ``shuffle_buffer`` rows are reseeded from ``seed`` and the epoch.
    cur_shard, shard_count
        Read only shard ``cur_shard`` of ``shard_count`` (data-parallel workers).
    workers
        Reader threads; 1 (a synchronous reader) keeps the row order reproducible.
    """

    def __init__(self, url: str, rows: int, batch_size: int, shuffle: bool = True, seed: int = 0,
                 shuffle_buffer: int = 100_000, cur_shard: Optional[int] = None,
                 shard_count: Optional[int] = None, workers: int = 1) -> None:
        self.url = to_url(url)
        self.rows = rows if shard_count is None else math.ceil(rows / shard_count)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.shuffle_buffer = shuffle_buffer
        self.cur_shard = cur_shard
        self.shard_count = shard_count
        self.workers = workers

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.rows / self.batch_size))

    def epoch(self, n: int) -> Iterator[Batch]:
        from petastorm import make_batch_reader
        from petastorm.pytorch import BatchedDataLoader

        seed = self.seed * 1000 + n
        if self.shuffle:
            torch.manual_seed(seed)  # the shuffling buffer draws from torch's generator
        with _quiet_petastorm(), make_batch_reader(
                self.url, num_epochs=1, schema_fields=FIELDS, shuffle_row_groups=self.shuffle, seed=seed,
                cur_shard=self.cur_shard, shard_count=self.shard_count,
                reader_pool_type="dummy" if self.workers <= 1 else "thread",
                workers_count=max(1, self.workers)) as reader:
            loader = BatchedDataLoader(reader, batch_size=self.batch_size,
                                       shuffling_queue_capacity=self.shuffle_buffer if self.shuffle else 0)
            for batch in loader:
                yield _to_batch(batch)


class InMemoryLoader:
    """Hold a split in memory as tensors; a new random permutation every epoch."""

    def __init__(self, users: torch.Tensor, items: torch.Tensor, ratings: torch.Tensor, batch_size: int,
                 shuffle: bool = True, seed: int = 0) -> None:
        self.users, self.items, self.ratings = users.long(), items.long(), ratings.float()
        self.rows = len(ratings)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed

    @classmethod
    def from_parquet(cls, url: str, batch_size: int, shuffle: bool = True, seed: int = 0) -> "InMemoryLoader":
        """Read a split once, through Petastorm (so any URL it reads works)."""
        reader = PetastormLoader(url, rows=0, batch_size=1 << 20, shuffle=False)
        parts = list(reader.epoch(0))
        if not parts:
            empty = torch.empty(0)
            return cls(empty, empty, empty, batch_size, shuffle, seed)
        users, items, ratings = (torch.cat(t) for t in zip(*parts))
        return cls(users, items, ratings, batch_size, shuffle, seed)

    def steps_per_epoch(self) -> int:
        return max(1, math.ceil(self.rows / self.batch_size))

    def to(self, device: torch.device) -> "InMemoryLoader":
        """Hold the split on ``device`` (in place; returns self): batches are then gathered there."""
        self.users, self.items, self.ratings = (t.to(device) for t in (self.users, self.items, self.ratings))
        return self

    def epoch(self, n: int) -> Iterator[Batch]:
        device = self.users.device
        if self.shuffle:
            # Drawn where the split is held: on an H200 machine's CPU a permutation of 20M rows took about 0.7 s,
            # as long as the GPU's whole epoch of rating steps. Seeded, so each device repeats its order.
            generator = torch.Generator(device=device).manual_seed(self.seed * 1000 + n)
            order = torch.randperm(self.rows, generator=generator, device=device)
        else:
            order = torch.arange(self.rows, device=device)
        for start in range(0, self.rows, self.batch_size):
            idx = order[start:start + self.batch_size]
            yield self.users[idx], self.items[idx], self.ratings[idx]


def make_loaders(data: PreparedData, batch_size: int, loader: str, memory_max_rows: int, seed: int,
                 shuffle_buffer: int, workers: int = 1, cur_shard: Optional[int] = None,
                 shard_count: Optional[int] = None, shard_valid: bool = False):
    """(train, valid, kind): in-memory when ``loader`` says so, or ``auto`` and the data fit. The training
    split is read as shard ``cur_shard`` of ``shard_count``, and with ``shard_valid`` the validation split too
    (a data-parallel run sums every rank's validation figures)."""
    counts = data.counts
    rows = counts["train_rows"] + counts["valid_rows"]
    kind = loader if loader != "auto" else ("memory" if rows <= memory_max_rows else "petastorm")
    train_path, valid_path = data.part("train"), data.part("valid")
    if kind == "memory" and cur_shard is not None:
        raise ConfigError(f"reading a shard (train.cur_shard, or train.distributed) needs the petastorm loader, but "
                          f"train.loader={loader} chose the memory loader ({rows} rows); set train.loader=petastorm")
    if kind == "memory":
        train = InMemoryLoader.from_parquet(train_path, batch_size, shuffle=True, seed=seed)
        valid = InMemoryLoader.from_parquet(valid_path, 65536, shuffle=False)
    else:
        train = PetastormLoader(train_path, counts["train_rows"], batch_size, shuffle=True, seed=seed,
                                shuffle_buffer=shuffle_buffer, cur_shard=cur_shard, shard_count=shard_count,
                                workers=workers)
        valid = PetastormLoader(valid_path, counts["valid_rows"], 65536, shuffle=False, workers=workers,
                                cur_shard=cur_shard if shard_valid else None,
                                shard_count=shard_count if shard_valid else None)
    return train, valid, kind

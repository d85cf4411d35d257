"""The prepare stage: reading (:mod:`.source`), cleaning (:mod:`.clean`), splitting
(:mod:`.split`), indexing (:mod:`.index`), the chain of transforms and the Parquet layout
(:mod:`.transforms`), and the stage itself (:mod:`.stage`: ``run``, ``main``)."""
from cfmodel.prepare.stage import main, run

__all__ = ["main", "run"]

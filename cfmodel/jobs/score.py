"""spark-submit entry point of the score stage; the stage lives in ``cfmodel.score``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/score.py --conf conf/local.yaml
"""
import sys

from cfmodel.score import main

if __name__ == "__main__":
    sys.exit(main())

"""spark-submit entry point of the evaluate stage; the stage lives in ``cfmodel.evaluate``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/evaluate.py --conf conf/local.yaml
"""
import sys

from cfmodel.evaluate import main

if __name__ == "__main__":
    sys.exit(main())

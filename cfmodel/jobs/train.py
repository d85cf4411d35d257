"""spark-submit entry point of the train stage; the stage lives in ``cfmodel.train``.

    PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' jobs/train.py --conf conf/local.yaml
"""
import sys

from cfmodel.train import main

if __name__ == "__main__":
    sys.exit(main())

"""Entry point of the demo-data generator; it lives in ``cfmodel.generate``.

    .venv/bin/python jobs/generate.py --conf conf/local.yaml --set generate.n_ratings=1000000
"""
import sys

from cfmodel.generate import main

if __name__ == "__main__":
    sys.exit(main())

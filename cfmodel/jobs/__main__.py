"""``python -m cfmodel.jobs <stage>``: the path of a stage's ``spark-submit`` entry script."""
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAGES = sorted(p.stem for p in HERE.glob("*.py") if not p.stem.startswith("_"))

if len(sys.argv) != 2 or sys.argv[1] not in STAGES:
    print(f"usage: python -m cfmodel.jobs {{{','.join(STAGES)}}}", file=sys.stderr)
    sys.exit(2)
print(HERE / f"{sys.argv[1]}.py")

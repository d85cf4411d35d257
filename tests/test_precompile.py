"""make install's precompile step (tools/precompile.py) names modules that exist.

It imports each module it names to write their bytecode and only notes one that fails to import, so
a name that stops existing (a typo, a module moved in an upgrade) would silently leave those modules
to compile in every process. Mutant caught: any misspelt name in ``GROUPS`` (checked with
``torch.distributed.runn``: ``assert ['torch.distributed.runn'] == []``).
"""
import importlib.util
import runpy
from pathlib import Path

TOOL = Path(__file__).resolve().parents[1] / "tools" / "precompile.py"


def test_every_module_the_precompile_step_imports_exists():
    groups = runpy.run_path(str(TOOL))["GROUPS"]
    names = [name for group in groups for name in group]
    assert "torch._dynamo" in names and "cfmodel.pipeline" in names and "mlflow.server" in names
    assert [name for name in names if importlib.util.find_spec(name) is None] == []

"""What a run records of the code it ran (the manifest's ``versions``, part of every stage's fingerprint)."""
import os
import subprocess
import sys

from helpers import project_archive

PRINT_VERSION = ("import cfmodel; from cfmodel.pipeline.environment import environment; "
                 "print(cfmodel.__file__, environment()['cfmodel'])")


def test_the_version_recorded_is_that_of_the_code_imported(tmp_path):
    """A ``--py-files`` archive of another version than the node's installed ``cfmodel`` (or than none): the
    archive's version is recorded, so a new version's run does not take an old one's stages as current.
    Mutant caught: the installed distribution's version (``importlib.metadata``): 0.1.0 for the archive's
    9.9.9 here, and None on a node where nothing is installed."""
    archive = project_archive(tmp_path, version="9.9.9")
    done = subprocess.run([sys.executable, "-c", PRINT_VERSION], env={**os.environ, "PYTHONPATH": str(archive)},
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    imported_from, version = done.stdout.split()
    assert imported_from.startswith(str(archive)) and version == "9.9.9"

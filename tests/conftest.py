import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
if str(SRC) not in sys.path:  # tests also run from a worktree without an editable install
    sys.path.insert(0, str(SRC))


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("OPENBLAS_NUM_THREADS", "1")
    return env


@pytest.fixture
def cli_env():
    """Environment for subprocess runs of `python -m kernel_eft` against this checkout."""
    return _env()


def find_mpiexec():
    candidate = Path(sys.executable).parent / "mpiexec"
    if candidate.exists():
        return str(candidate)
    return shutil.which("mpiexec")


@pytest.fixture
def mpiexec():
    exe = find_mpiexec()
    assert exe is not None, "mpiexec not found: install the mpich wheel (pip install mpich)"
    return exe

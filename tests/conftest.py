import os
import subprocess
import sys
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
GOLDEN = TESTS / "data" / "golden"
FIXTURES = TESTS / "fixtures"
EXAMPLES = ROOT / "virnucpro_kernel" / "data" / "examples"


def run_cli(*args, cwd=None, env=None, timeout=600):
    """Run ``python -m virnucpro_kernel ARGS`` and return the CompletedProcess (text)."""
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
    full_env.update(env or {})
    return subprocess.run([sys.executable, "-m", "virnucpro_kernel", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd, env=full_env, timeout=timeout)


@pytest.fixture
def cli():
    return run_cli

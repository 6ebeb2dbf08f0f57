"""Run a Python snippet in a fresh interpreter that sees this checkout, for snapshot round-trip tests."""

import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_python(script, cwd):
    """subprocess.CompletedProcess of `python -c script` in `cwd` with the checkout on PYTHONPATH (text output)."""
    env = dict(os.environ, PYTHONPATH=REPO)
    return subprocess.run([sys.executable, '-c', script], capture_output=True, text=True, cwd=str(cwd), env=env)

"""Test-suite settings shared by every test module."""

import os
import sys

import torch

# Tests run from the repository root without installing: make the top-level CLIs importable.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The tests use tiny tensors, where a second thread costs more in synchronisation than it saves,
# and one thread makes every floating-point reduction order, hence every result, repeatable.
torch.set_num_threads(1)

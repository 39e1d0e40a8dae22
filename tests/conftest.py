import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
torch.set_num_threads(1)  # small models; one thread is faster and steadier on this 2-core machine


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(1, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))  # benchmarks/
torch.set_num_threads(1)  # small models; one thread is faster and steadier on this 2-core machine

# Property-based tests (the fuzz suites) draw the same cases on every run by default, so a CI run cannot fail
# on a case no earlier run saw; JC_FUZZ_RANDOM=1 draws fresh cases (exploring: run it now and then).
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("fixed", derandomize=True, database=None)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile("explore" if os.environ.get("JC_FUZZ_RANDOM") == "1" else "fixed")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(scope="module")
def shell():
    """A real IPython shell with the extension loaded (the magics' tests drive it with run_cell)."""
    from IPython.core.interactiveshell import InteractiveShell

    sh = InteractiveShell.instance()
    sh.run_cell("%load_ext jupyter_compress").raise_error()
    return sh

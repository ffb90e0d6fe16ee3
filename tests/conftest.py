import os

import pytest
from hypothesis import HealthCheck, settings

# Deterministic hypothesis runs (as SciPy's conftest): no database, derandomized, no deadline.
settings.register_profile(
    "pdlt",
    derandomize=True,
    database=None,
    deadline=None,
    max_examples=60,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("pdlt")

os.environ.setdefault("CI", "1")  # quiet progress bars in test logs


@pytest.fixture(autouse=True)
def _few_threads():
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))
    yield

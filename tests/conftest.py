import os

import pytest
import torch

# Tests use the reference kernels unless a test asks for the compiled one explicitly.
os.environ.setdefault("OMNIFLEX_FLEX_KERNEL", "eager")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)

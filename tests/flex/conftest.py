import pytest
import torch


def _devices() -> list[str]:
    """``cpu``, and ``cuda`` where there is one: device-agnostic tests run on each."""
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(params=_devices())
def device(request: pytest.FixtureRequest) -> torch.device:
    return torch.device(request.param)

import json

import pytest
import torch
from torch import nn

from omniflex.flex import FlexSGD, FlexTelemetry, convert_to_flex, plot_telemetry, read_telemetry


def test_telemetry_records_every_state_and_plots(tmp_path):
    model = convert_to_flex(nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2)))
    opt = FlexSGD(model.parameters(), lr=0.1, momentum=0.9)
    path = tmp_path / "t.jsonl"
    with FlexTelemetry(path, every=2) as tel:
        for step in range(6):
            model(torch.randn(3, 4) * (100 if step == 4 else 1)).sum().backward()
            opt.step()
            opt.zero_grad()
            tel.record(step, model, opt)
    rows = read_telemetry(path)
    assert {r["step"] for r in rows} == {0, 2, 4}
    names = {r["tensor"] for r in rows}
    assert {"0.input", "0.grad_weight", "2.weight.storage"} <= names
    assert any(n.startswith("optim.") and n.endswith("momentum") for n in names)
    row = rows[-1]
    for key in ("exponent", "overflows", "flushes", "headroom_bits", "amax"):
        assert key in row
    assert any(r["overflows"] > 0 for r in rows if r["tensor"] == "0.input")  # the x100 step
    png = plot_telemetry(path, tmp_path / "t.png", tensors=["0.*"])
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_telemetry_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing\.jsonl"):
        read_telemetry(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"step": 0}) + "\n{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl:2"):
        read_telemetry(bad)
    good = tmp_path / "g.jsonl"
    good.write_text(json.dumps({"step": 0, "tensor": "a", "exponent": 1, "overflows": 0}) + "\n")
    with pytest.raises(ValueError, match="no tensors"):
        plot_telemetry(good, tmp_path / "x.png", tensors=["zzz*"])

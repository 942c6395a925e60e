"""``omniflex flex demo | plot``: the demo trains both formats; the plot reads its telemetry."""

import json

import pytest

from omniflex.cli.main import main


def test_flex_demo_trains_both_formats_and_writes_files(tmp_path, capsys):
    assert main(["flex", "demo", "--out", str(tmp_path), "--steps", "40"]) == 0
    out = capsys.readouterr().out
    assert "float32" in out and "flex16+5" in out
    summary = json.loads((tmp_path / "summary.json").read_text())
    losses = summary["final_loss"]
    assert losses["flex16+5"] == pytest.approx(losses["float32"], rel=0.05)
    for name in ("losses.png", "exponents.png", "flex_telemetry.jsonl"):
        assert (tmp_path / name).stat().st_size > 0
    assert main(["flex", "plot", str(tmp_path / "flex_telemetry.jsonl"), "--tensor", "0.*"]) == 0
    assert (tmp_path / "flex_telemetry.png").read_bytes()[:4] == b"\x89PNG"

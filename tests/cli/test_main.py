"""The ``omniflex`` command: every subcommand explains itself; the demo and plot run."""

import json

import pytest

from omniflex.cli.main import main

SUBCOMMANDS = [
    [], ["flex"], ["flex", "demo"], ["flex", "plot"], ["flex", "repro"], ["data"],
    ["data", "build"], ["data", "convert"], ["bench"], ["bench", "flex"],
    ["bench", "tokenizers"], ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "roundtrip"],
    ["data", "tokenize"], ["train"], ["bench", "model"], ["generate"], ["eval", "train-judge"],
]  # fmt: skip


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: " ".join(a) or "omniflex")
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: omniflex" in out and len(out.splitlines()) > 3


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


def test_errors_name_the_input(tmp_path, capsys):
    assert main(["flex", "plot", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["flex", "demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_bench_flex_prints_json_ratios(capsys):
    assert main(["bench", "flex", "--json", "--only", "param_bytes_vs_fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["param_bytes_vs_fp32"]["ratio"] <= 0.52


def test_data_tokenize_prints_the_task_balance():
    from omniflex.cli.main import _balance_table

    table = _balance_table({
        "asr": {"text": 100, "audio": 0, "image": 0, "special": 20},
        "tts": {"text": 30, "audio": 900, "image": 0, "special": 40},
    })  # fmt: skip
    lines = table.splitlines()
    assert lines[2].split() == ["tts", "30", "900", "0", "40", "89.0%"]  # largest first
    assert lines[3].split()[-1] == "11.0%"

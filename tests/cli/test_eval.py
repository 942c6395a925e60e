"""``omniflex eval`` and ``omniflex eval parity`` through their argparse registration."""

from __future__ import annotations

import argparse
import json

import pytest

from omniflex.cli import eval as eval_cli
from tests.eval.test_capabilities import write_corpus


def _run(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="omniflex")
    eval_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_eval_writes_json_and_markdown_then_parity(tmp_path, capsys) -> None:
    corpus = write_corpus(tmp_path / "corpus", tasks=["asr", "quote"])
    out = tmp_path / "eval"
    argv = ["eval", "--corpus", str(corpus), "--limit", "1", "--max-new-tokens", "6",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert _run(argv) == 0
    printed = capsys.readouterr().out
    result = json.loads((out / "eval.json").read_text())
    assert result["samples"] == 2 and set(result["tasks"]) == {"asr", "quote"}
    assert "| asr_wer |" in printed and (out / "eval.md").read_text() in printed + "\n"
    assert _run(["eval", "parity", str(out / "eval.json"), str(out / "eval.json"),
                 "--out", str(tmp_path / "parity.md")]) == 0  # fmt: skip
    parity = capsys.readouterr().out
    assert "All metrics within tolerance." in parity and "| asr_wer |" in parity
    assert (tmp_path / "parity.md").read_text() in parity + "\n"


def test_eval_json_output_and_bad_inputs(tmp_path, capsys) -> None:
    corpus = write_corpus(tmp_path / "corpus", tasks=["disallowed"])
    argv = ["eval", "--corpus", str(corpus), "--quick", "--json", "--max-new-tokens", "4",
            "--no-progress"]  # fmt: skip
    assert _run(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["quick"] and result["limit_per_task"] == 3
    assert "disallowed_safe_rate" in result["metrics"]
    with pytest.raises(FileNotFoundError, match="omniflex eval --out"):
        _run(["eval", "parity", str(tmp_path / "a.json"), str(tmp_path / "b.json")])
    (tmp_path / "a.json").write_text('{"x": 1}')
    with pytest.raises(ValueError, match="not an eval result"):
        _run(["eval", "parity", str(tmp_path / "a.json"), str(tmp_path / "a.json")])


def test_parity_is_a_sub_action_and_the_run_is_the_default() -> None:
    parser = argparse.ArgumentParser(prog="omniflex")
    eval_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    run = parser.parse_args(["eval", "--limit", "2"])
    assert run.eval_command is None and run.func.__name__ == "_cmd_run" and run.limit == 2
    parity = parser.parse_args(["eval", "parity", "a.json", "b.json"])
    assert parity.eval_command == "parity" and parity.func.__name__ == "_cmd_parity"
    with pytest.raises(SystemExit):
        parser.parse_args(["eval", "nonsense"])

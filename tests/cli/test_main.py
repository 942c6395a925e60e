"""The ``omniflex`` command table: every subcommand explains itself; user errors print one line."""

import argparse
import runpy
import subprocess
import sys

import pytest

from omniflex.cli.main import COMMANDS, build_parser, main

SUBCOMMANDS = [
    [], ["flex"], ["flex", "demo"], ["flex", "plot"], ["flex", "repro"], ["data"],
    ["data", "build"], ["data", "extend"], ["data", "convert"], ["bench"], ["bench", "flex"],
    ["bench", "tokenizers"], ["tokenizer"], ["tokenizer", "train"], ["tokenizer", "roundtrip"],
    ["data", "tokenize"], ["train"], ["bench", "model"], ["generate"], ["eval", "train-judge"],
    ["model"], ["model", "export"], ["model", "list"], ["bench", "realtime"], ["eval"],
    ["eval", "parity"], ["eval", "safety"], ["chat"], ["serve"], ["card"], ["safety"],
    ["bench", "soak"], ["safety", "train-voice"], ["safety", "train-moderation"],
    ["safety", "eval"], ["eval", "hearing"],
]  # fmt: skip


@pytest.mark.parametrize("argv", SUBCOMMANDS, ids=lambda a: " ".join(a) or "omniflex")
def test_every_subcommand_has_help(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "usage: omniflex" in out and len(out.splitlines()) > 3


def _commands(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield (*path, name), sub
                yield from _commands(sub, (*path, name))


def test_each_command_module_owns_one_command_with_a_description():
    parser = build_parser()
    top = [path[0] for path, _ in _commands(parser) if len(path) == 1]
    assert len(top) == len(COMMANDS) == len(set(top))
    for path, sub in _commands(parser):
        assert sub.description, f"omniflex {' '.join(path)} has no description"
    assert {tuple(a) for a in SUBCOMMANDS if a} == {path for path, _ in _commands(parser)}


def test_python_m_omniflex_is_the_command(capsys, monkeypatch):
    """``python -m omniflex`` / ``torchrun -m omniflex train`` run the same command table."""
    monkeypatch.setattr(sys, "argv", ["omniflex", "train", "--help"])
    with pytest.raises(SystemExit) as exc:
        runpy.run_module("omniflex", run_name="__main__")
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: omniflex train")
    words = " ".join(out.split())  # as wrapped for any terminal width
    assert "recipes: " in words and "tiny" in words and "override keys: " in words


def test_errors_name_the_input(tmp_path, capsys):
    assert main(["flex", "plot", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err
    assert main(["flex", "demo", "--out", str(tmp_path), "--steps", "0"]) == 2
    assert "steps" in capsys.readouterr().err


def test_under_torchrun_one_process_reports_a_user_error(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    assert main(["flex", "plot", str(tmp_path / "nope.jsonl")]) == 2
    assert capsys.readouterr().err == ""
    monkeypatch.setenv("RANK", "0")
    assert main(["flex", "plot", str(tmp_path / "nope.jsonl")]) == 2
    assert "nope.jsonl" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["--help"], ["data", "--help"], ["serve", "--help"]])
def test_help_does_not_load_torch(argv):
    """Building a command's parser loads only what that command's choices come from: the
    command list and the light commands' help do not import torch (seconds on a small CPU)."""
    code = (
        "import sys\nfrom omniflex.cli.main import main\n"
        f"try:\n    main({argv!r})\nexcept SystemExit:\n    pass\n"
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "False", out.stdout[-400:]

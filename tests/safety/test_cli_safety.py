import argparse

import pytest

from omniflex.cli.safety import add_parser


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniflex")
    add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_subcommands_parse_with_defaults():
    args = _parser().parse_args(["safety", "eval", "--quick", "--json"])
    assert args.quick and args.json and args.corpus == "data/tiny" and callable(args.func)
    args = _parser().parse_args(["safety", "train-voice", "--steps", "10"])
    assert args.steps == 10
    assert _parser().parse_args(["safety", "train-moderation"]).safety_command == "train-moderation"


def test_help_describes_each_action(capsys):
    for action, words in (("train-voice", "codec"), ("train-moderation", "TF-IDF"),
                          ("eval", "GPT-4o")):  # fmt: skip
        with pytest.raises(SystemExit):
            _parser().parse_args(["safety", action, "--help"])
        assert words in capsys.readouterr().out

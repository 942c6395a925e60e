"""``omniflex card`` through its argparse registration."""

from __future__ import annotations

import argparse

import pytest

from omniflex.cli import card as card_cli
from tests.eval.test_card import inputs  # noqa: F401  (the module-scoped fixture)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="omniflex")
    card_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser


def test_card_writes_markdown_and_html(inputs, tmp_path, capsys) -> None:  # noqa: F811
    out = tmp_path / "card"
    args = _parser().parse_args([
        "card", "--model", "tiny", "--out", str(out), "--eval", str(inputs["eval"]),
        "--float32-eval", str(inputs["float32"]), "--safety", str(inputs["safety"]),
        "--latency", str(inputs["latency"]), "--corpus", str(inputs["corpus"]), "--no-progress",
    ])  # fmt: skip
    assert args.func(args) == 0
    captured = capsys.readouterr()
    assert str(out / "system_card.md") in captured.out
    assert f"html: {out / 'system_card.html'}" in captured.err
    markdown = (out / "system_card.md").read_text()
    assert markdown.startswith("# System card: tiny")
    for section in ("## Model", "## Data", "## Capability evaluations",
                    "## flex16+5 against float32", "## Speech latency", "## Safety",
                    "## Robustness", "## Limitations", "## Appendix: provenance"):  # fmt: skip
        assert section in markdown, section
    assert (out / "system_card.html").read_text().startswith("<!doctype html>")


def test_card_inputs_are_checked(inputs, tmp_path) -> None:  # noqa: F811
    parser = _parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["card", "--model", "tiny"])  # --out is required
    base = ["card", "--out", str(tmp_path / "card"), "--corpus", str(inputs["corpus"]),
            "--safety", str(inputs["safety"])]  # fmt: skip
    args = parser.parse_args([*base, "--eval", str(tmp_path / "missing.json")])
    with pytest.raises(FileNotFoundError, match=r"missing\.json does not exist"):
        args.func(args)
    args = parser.parse_args([*base, "--eval", str(inputs["latency"])])
    with pytest.raises(ValueError, match="is not a eval result"):
        args.func(args)
    args = parser.parse_args([*base, "--eval", str(inputs["eval"]), "--model", "nope"])
    with pytest.raises(FileNotFoundError, match="no omni model 'nope'"):
        args.func(args)

"""``omniflex bench flex``: ratios against float32 (``bench tokenizers``: test_tokenizer.py)."""

import json

from omniflex.cli.main import main


def test_bench_flex_prints_json_ratios(capsys):
    assert main(["bench", "flex", "--json", "--only", "param_bytes_vs_fp32"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["param_bytes_vs_fp32"]["ratio"] <= 0.52

"""Markdown of capability results and the parity table (flex16+5 against float32)."""

from __future__ import annotations

import copy

from omniflex.eval.report import compare_results, markdown_report, parity_markdown


def _result(precision: str = "flex16+5", accuracy: float = 0.9, mcd: float = 5.0) -> dict:
    def metric(value, target, better="higher"):
        met = None
        if target is not None:
            met = value >= target if better == "higher" else value <= target
        out = {"value": value, "n": 4, "target": target, "better": better, "met": met}
        if better == "higher":
            out["interval"] = [0.5, 0.99]
        return out

    latency = {"answers": 4, "prefill_seconds_mean": 0.01, "answer_seconds_mean": 0.2,
               "answer_seconds_p50": 0.2, "answer_seconds_p90": 0.3, "tokens_mean": 12.0,
               "tokens_per_second": 60.0, "stop_reasons": {"stop_token": 4}}  # fmt: skip
    records = [{"id": f"s{i}", "correct": i < 3} for i in range(4)]
    return {
        "model": "tiny", "precision": precision, "split": "test", "corpus": "data/tiny",
        "samples": 8, "seconds": 3.0, "quick": False, "max_new_tokens": None,
        "metrics": {
            "vqa_accuracy": metric(accuracy, 0.9),
            "tts_mcd_db": metric(mcd, None, "lower"),
            "quote_safe_rate": metric(0.5, None),
        },
        "tasks": {
            "vqa": {"n": 4, "metrics": {}, "latency": latency, "image_rate": 0.5, "errors": [],
                    "records": records,
                    "examples": [{"id": "s0", "prompt": "[image: 2 obj] Is there a red star?",
                                  "reference": "No, there is not.", "hypothesis": "No | never"}]},
            "quote": {"n": 4, "metrics": {"quote_safe_rate": metric(0.5, None)},
                      "behaviour_rates": {"refuse": 0.5, "hedge": 0.0, "comply": 0.5,
                                          "empty": 0.0},
                      "by_condition": {"typed": metric(0.5, None)},
                      "latency": {"answers": 0}, "errors": ["s9: ValueError: too long"],
                      "records": [], "examples": []},
        },
    }  # fmt: skip


def test_markdown_report_has_every_table() -> None:
    md = markdown_report(_result())
    assert md.startswith("# Capability evaluation: tiny (flex16+5)")
    assert "| vqa_accuracy | 0.900 | 0.50–0.99 | 4 | ≥ 0.90 | yes |" in md
    assert "| tts_mcd_db | 5.000 | — | 4 | — | — |" in md
    # safety behaviours, with each condition's rate, n and interval
    assert "| quote | 4 | 0.50 | 0.00 | 0.50 | 0.00 | 0.50 | typed 0.50 (n 4, 0.50–0.99) |" in md
    assert "| vqa | 4 | 0 | 0.010 | 0.200 / 0.300 | 12.0 | 60.0 | — | stop_token 4 |" in md
    assert "- quote: s9: ValueError: too long" in md
    assert "- vqa: image_rate 0.500" in md
    assert "No \\| never" in md  # pipes inside cells are escaped


def test_parity_of_a_result_with_itself_and_with_a_drifted_one() -> None:
    a = _result()
    same = compare_results(a, copy.deepcopy(a))
    assert same["all_within"] and same["agreement"]["vqa"] == {"samples": 4, "agreement": 1.0}
    b = _result("float32", accuracy=0.925, mcd=5.2)
    b["tasks"]["vqa"]["records"][3]["correct"] = True
    cmp = compare_results(a, b)
    rows = {r["metric"]: r for r in cmp["rows"]}
    assert rows["vqa_accuracy"]["difference"] == -0.025 and not rows["vqa_accuracy"]["within"]
    assert not rows["tts_mcd_db"]["within"]  # 0.2 dB > 2% of 5.2 dB
    assert compare_results(a, b, rate_tolerance=0.03, relative_tolerance=0.05)["all_within"]
    assert cmp["agreement"]["vqa"]["agreement"] == 0.75 and not cmp["all_within"]
    md = parity_markdown(a, b)
    assert "# Parity: tiny flex16+5 vs tiny float32" in md and "**Not all within.**" in md
    assert "| vqa_accuracy | 0.900 | 0.925 | -0.025 | 2 pt | no |" in md
    assert "| vqa | 4 | 0.750 |" in md


def test_parity_shows_metrics_only_one_side_has() -> None:
    a, b = _result(), _result("float32")
    del b["metrics"]["tts_mcd_db"]
    rows = {r["metric"]: r for r in compare_results(a, b)["rows"]}
    assert rows["tts_mcd_db"]["b"] is None and rows["tts_mcd_db"]["within"] is None

"""The system card: every number it prints has a source (file + JSON Pointer) that holds it, the
HTML is self-contained, and the limitations are written from the numbers.

The inputs are made by the real functions where that is cheap (the capability and safety
evaluations answered by the oracle of ``test_capabilities`` on one sample per task) and from
the real output schemas otherwise (the data card, the classifier figures, the latency bench).
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path

import pytest
import torch

from omniflex.eval import capabilities
from omniflex.eval.capabilities import evaluate_model
from omniflex.eval.card import Provenance, build_card, numbers_in, write_card
from omniflex.eval.safety_eval import evaluate_safety
from tests.eval.test_capabilities import _Oracle, write_corpus
from tests.eval.test_safety_eval import TASKS as SAFETY_RUN_TASKS
from tests.eval.test_safety_eval import classifier_figures

CAPABILITY_TASKS = ("asr", "spoken_qa", "text_chat", "caption", "vqa", "digit", "video_qa")
# Written independently of ``omniflex.eval.card``: a number is digits not glued to a word.
NUMBER = re.compile(r"(?<![\w.+])\d+(?:\.\d+)?(?!\w)")


def data_card(tasks) -> dict:
    """A ``data_card.json`` shaped like ``omniflex data build``'s."""
    return {
        "size": "test", "seed": 0, "shards": ["test-00000.tar"], "samples": len(tasks),
        "samples_per_split_task": {f"test/{t}": 1 for t in tasks},
        "speech_seconds_per_voice": {"aria": 3.5, "lia": 2.25, "moss": 1.75},
        "speech_hours": 0.0021, "images": 3, "videos": 1,
        "token_estimate": {"text": 900, "audio": 4000, "image": 768},
    }  # fmt: skip


def bench_result() -> dict:
    """An ``omniflex bench realtime --json`` result (``run_realtime_bench``'s schema)."""

    def stats(lo: float, p50: float, p90: float) -> dict:
        return {"n": 20, "min": lo, "p50": p50, "p90": p90, "mean": p50 + 7.5}

    return {
        "model": "tiny", "precision": "as trained", "force_speech": False, "voice_guard": True,
        "turns": 20, "turns_with_audio": 19, "speed_x_realtime": 1.0,
        "held_out_voices": ["lia", "moss"], "latency_ms": stats(211.4, 402.6, 530.2),
        "floor_ms": stats(150.1, 305.3, 390.0), "floor_isolated_ms": stats(140.0, 290.0, 350.0),
        "ratio_p50_to_floor": 1.32,
        "concurrent": {"sessions": 4, "turns": 20, "latency_ms": stats(230.0, 450.0, 800.0),
                       "p90_ratio_to_single": 1.51},
        "rtf": {"p50": 0.284, "max": 0.41},
        "capacity": {"refused_with": "error", "code": "session_limit", "ms": 4.2},
        "statuses": ["completed"],
        "targets": {"p50_ms": 320, "min_ms": 232, "ratio_p50_to_floor": 1.5,
                    "concurrent_p90_ratio": 2.0, "rtf": 0.5},
        "pass": {"p50": False, "min": True, "ratio": True, "concurrent": True, "rtf": True},
    }  # fmt: skip


@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, Path]:
    """eval.json (one metric made to miss its target), a float32 eval.json, safety.json, a
    bench JSON and a corpus with a data card."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("card_inputs")
    tasks = (*CAPABILITY_TASKS, *SAFETY_RUN_TASKS[:-2])  # text_chat/spoken_qa already there
    corpus = write_corpus(root / "corpus", tasks=tasks)
    (corpus / "data_card.json").write_text(json.dumps(data_card(tasks)))
    oracle = _Oracle(corpus)
    with pytest.MonkeyPatch.context() as patch:  # a perfect speech judge: figures are exact
        patch.setattr(capabilities, "_speech_judge", lambda: oracle)
        result = json.loads(json.dumps(
            evaluate_model("tiny", corpus, assistant=oracle, tasks=CAPABILITY_TASKS,
                           progress=False)
        ))  # fmt: skip
        safety = evaluate_safety(
            "tiny", corpus, assistant=oracle, classifiers=classifier_figures(corpus),
            progress=False,
        )  # fmt: skip
    for metrics in (result["metrics"], result["tasks"]["vqa"]["metrics"]):
        metrics["vqa_accuracy"].update(value=0.25, met=False)
    float32 = copy.deepcopy(result)
    float32["precision"] = "float32"
    float32["metrics"]["asr_wer"]["value"] = 0.0625
    paths = {"corpus": corpus}
    for name, data in (("eval", result), ("float32", float32), ("safety", safety),
                       ("latency", bench_result())):  # fmt: skip
        paths[name] = root / f"{name}.json"
        paths[name].write_text(json.dumps(data))
    return paths


def _card(inputs, out: Path, **drop: bool) -> dict[str, Path]:
    given = {k: inputs[k] for k in ("eval", "float32", "safety", "latency") if not drop.get(k)}
    return write_card(
        "tiny", out, eval_path=given.get("eval"), float32_eval_path=given.get("float32"),
        safety_path=given.get("safety"), latency_path=given.get("latency"),
        corpus=inputs["corpus"], progress=False,
    )  # fmt: skip


def _resolve(document, pointer: str):
    for token in pointer.split("/")[1:]:
        token = token.replace("~1", "/").replace("~0", "~")
        document = document[int(token)] if isinstance(document, list) else document[token]
    return document


def _provenance_rows(markdown: str) -> list[tuple[str, str, str]]:
    appendix = markdown.split("## Appendix: provenance")[1]
    rows = [line.strip("|").split(" | ") for line in appendix.splitlines() if line.startswith("| ")]
    return [(v.strip(), f.strip(), k.strip()) for v, f, k in rows[1:]]  # rows[0]: the header


def _printed(value) -> str | None:
    """How a JSON value may appear in the card, for the check below (None: any number)."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    return None if isinstance(value, float) else str(value)


# ----------------------------------------------------------------------------- provenance
def test_every_number_has_a_source_that_holds_it(inputs, tmp_path) -> None:
    written = _card(inputs, tmp_path / "card")
    markdown = written["markdown"].read_text()
    rows = _provenance_rows(markdown)
    assert rows
    cited = set()
    for text, file, pointer in rows:
        value = _resolve(json.loads(Path(file).read_text()), pointer)
        expected = _printed(value)
        if expected is None:  # a float, printed with a fixed number of decimals
            decimals = len(text.split(".")[1]) if "." in text else 0
            assert float(text) == pytest.approx(value, abs=0.51 * 10**-decimals), pointer
        else:
            assert text == expected, pointer
        cited |= set(NUMBER.findall(text))
    body = markdown.split("## Appendix: provenance")[0]
    numbers = set(NUMBER.findall(body))
    assert numbers and numbers <= cited, sorted(numbers - cited)
    # Numbers from every input, and the parity differences through parity.json.
    sources = {Path(f).name for _, f, _ in rows}
    assert {"config.json", "data_card.json", "eval.json", "float32.json", "safety.json",
            "latency.json", "parity.json"} <= sources  # fmt: skip
    assert "| vqa_accuracy | 0.250 |" in body and "402.6" in body and "0.960" in body


def test_numbers_in_skips_names_and_an_uncited_number_is_refused(inputs) -> None:
    assert numbers_in("flex16+5 vs float32, GPT-4o p50: 0.96 at 10 dB (n 12).") == [
        "0.96", "10", "12",
    ]  # fmt: skip
    src = Provenance()
    for label in ("eval", "safety"):
        src.add(label, inputs[label])
    src.add("model", Path(__file__).parents[2] / "omniflex/assets/models/tiny/config.json")
    build_card(src, inputs["corpus"].parent / "ok")  # everything cited
    safety = src.data["safety"]
    # a number no input holds (the card does cite a 3: three benign tasks' samples)
    safety["risks"]["speaker_identification"]["mitigation"] += " Trained on 37 voices."
    with pytest.raises(ValueError, match=r"no source: \['37'\]"):
        build_card(src, inputs["corpus"].parent / "bad")


# ----------------------------------------------------------------------------- content
def test_html_is_self_contained(inputs, tmp_path) -> None:
    written = _card(inputs, tmp_path / "card")
    page = written["html"].read_text()
    assert page.startswith("<!doctype html>") and "<style>" in page
    assert not re.search(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//""", page)
    assert "<link" not in page and "<script" not in page
    images = re.findall(r'<img [^>]*src="([^"]+)"', page)
    assert len(images) == 2 and all(i.startswith("data:image/png;base64,") for i in images)
    assert (tmp_path / "card" / "robustness.png").read_bytes()[:4] == b"\x89PNG"


def test_limitations_are_written_from_the_numbers(inputs, tmp_path) -> None:
    full = _card(inputs, tmp_path / "full")["markdown"].read_text()
    limits = full.split("## Limitations")[1].split("## Appendix")[0]
    assert "vqa_accuracy is 0.250 against a target of ≥ 0.900 (n 1)." in limits
    # The voice classifier under noise (0.9) misses the goal (0.96); clean (0.97) meets it.
    assert "voice_precision (noise_10db) is 0.900 (n 42) against a goal of 0.960" in limits
    assert "voice_precision (clean)" not in limits
    # ... as a point; 42 streams cannot show 0.96: the card says so and shows the interval.
    assert (
        "voice_precision reaches its goal of 0.960 only as a point estimate (0.970, n 42; "
        "interval from 0.877): too few samples to show it." in limits
    )
    assert "| 0.970 | 0.88–1.00 | 42 | 0.960 | 0.960 | not shown |" in full
    assert "Intervals: 95% Wilson intervals." in full
    assert "Speech latency p50 (ms) is 402.6 against a target of ≤ 320." in limits
    assert (
        "asr_wer of flex16+5 differs from float32 by -0.062 (flex16+5 0.000, float32 0.062; "
        "tolerance 2 pt)." in limits
    )
    assert "vqa_accuracy of flex16+5" not in limits
    assert "| latency, p50 (ms) | 402.6 | ≤ 320 | no |" in full
    assert "| asr_wer | 0.000 | 0.062 | -0.062 | 2 pt | no |" in full
    bare = _card(inputs, tmp_path / "bare", float32=True, latency=True)["markdown"].read_text()
    assert "Speech latency was not measured for this card" in bare
    assert "Not measured: no float32 evaluation was given" in bare
    assert not (tmp_path / "bare" / "parity.json").exists()


def test_missing_evaluations_are_measured_and_cited(inputs, tmp_path, monkeypatch) -> None:
    import omniflex.eval.capabilities as capabilities
    import omniflex.eval.safety_eval as safety_eval

    calls = []

    def fake(name: str):
        def run(model, corpus, quick=False, progress=True):
            calls.append((name, model, quick))
            return json.loads(inputs[name].read_text())

        return run

    monkeypatch.setattr(capabilities, "evaluate_model", fake("eval"))
    monkeypatch.setattr(safety_eval, "evaluate_safety", fake("safety"))
    out = tmp_path / "card"
    written = write_card("tiny", out, corpus=inputs["corpus"], quick=True, progress=False)
    assert calls == [("eval", "tiny", True), ("safety", "tiny", True)]
    assert written["eval"] == out / "eval.json" and written["safety"] == out / "safety.json"
    files = {f for _, f, _ in _provenance_rows(written["markdown"].read_text())}
    assert {str(out / "eval.json"), str(out / "safety.json")} <= files

"""The system card: a model's measured capabilities, parity, latency and safety, in one document.

``write_card("tiny", "card/", eval_path=..., safety_path=..., latency_path=...)`` writes
``card/system_card.md`` and a self-contained ``card/system_card.html`` (inline CSS, plots as
base64 PNG; no external asset), in the manner of the GPT-4o system card: model and data, the
capability evaluations per modality, flex16+5 against float32, speech latency, each safety risk
with its mitigation and our figure beside GPT-4o's, robustness to noise and input voice, and
limitations written from the numbers (every target not met, with its measured value).

**Provenance.** The card prints no number of its own: every figure is read from an input JSON
through ``Provenance``, which records the printed text, the file and the key path it came from
(a JSON Pointer, RFC 6901: ``/metrics/asr_wer/value``);
the appendix lists them all, and ``write_card`` refuses to write a card whose Markdown holds a
number (``numbers_in``) that is not in that list. Numbers the card would otherwise have to
compute (the flex16+5 - float32 differences) are first written to ``parity.json``
(``omniflex.eval.report.compare_results``) and read back from there. The inputs:

* the model folder's ``config.json`` (its ``model`` and ``training`` blocks);
* the corpus's ``data_card.json``;
* a capability result (``omniflex eval --out``: ``eval.json``); measured here (``--quick``: a
  few samples per task) and written to ``eval.json`` when not given;
* optionally a float32 capability result (``omniflex eval --precision float32``);
* a safety result (``omniflex eval safety --out``: ``safety.json``); measured here when not
  given, like the capability result;
* optionally a speech latency result (``omniflex bench realtime --json``); without it the card
  says latency was not measured.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from markdown_it import MarkdownIt

from omniflex.common.voices import voice
from omniflex.eval import capabilities, safety_eval
from omniflex.eval.report import compare_results
from omniflex.eval.report import format_value as _fmt
from omniflex.eval.safety_eval import met_word
from omniflex.model.pretrained import resolve_model_dir

__all__ = ["MODALITIES", "Provenance", "build_card", "numbers_in", "write_card"]

MODALITIES: dict[str, tuple[str, ...]] = {
    "Speech": ("asr", "spoken_qa", "tts"),
    "Text": ("text_chat",),
    "Images": ("caption", "digit", "vqa", "text_to_image"),
    "Video": ("video_qa",),
}
APPENDIX = "## Appendix: provenance"

# A number as a reader sees one: digits not glued to a word ("flex16+5", "GPT-4o", "p50" and
# "float32" are names, not numbers).
_NUMBER = re.compile(r"(?<![\w.+])\d+(?:\.\d+)?(?!\w)")


def numbers_in(text: str) -> list[str]:
    """The numbers a reader sees in ``text`` (digits that are not part of a name)."""
    return _NUMBER.findall(text)


# ----------------------------------------------------------------------------- provenance
def _pointer(keys: Sequence[str | int]) -> str:
    """The JSON Pointer (RFC 6901) of ``keys``: ``/metrics/asr_wer/value``."""
    return "".join("/" + str(k).replace("~", "~0").replace("/", "~1") for k in keys)


def _display_path(path: Path) -> Path:
    """``path`` relative to the working directory when it lies under it (cards stay portable)."""
    try:
        return path.resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return path


@dataclass
class Provenance:
    """The card's inputs (label -> JSON file) and every value printed from them."""

    files: dict[str, Path] = field(default_factory=dict)
    data: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)

    def add(self, label: str, path: str | Path) -> Any:
        """Read ``path`` (JSON) as source ``label``; the error says what to run to make it."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"the card's {label} input {path} does not exist")
        try:
            self.data[label] = json.loads(path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"the card's {label} input {path} is not JSON ({err.msg})") from None
        self.files[label] = _display_path(path)
        return self.data[label]

    def get(self, label: str, *keys: str | int) -> Any:
        """The value at ``keys`` of source ``label`` (not printed, so not recorded), or None."""
        value = self.data.get(label)
        for key in keys:
            if isinstance(value, dict):
                value = value.get(key)  # type: ignore[arg-type]
            elif isinstance(value, list) and isinstance(key, int) and 0 <= key < len(value):
                value = value[key]
            else:
                return None
        return value

    def show(self, label: str, *keys: str | int, digits: int = 3) -> str:
        """The value at ``keys`` of source ``label`` as printed text, recorded with its source."""
        value = self.get(label, *keys)
        text = _fmt(value, digits)
        self.rows.append({
            "text": text, "value": value, "file": str(self.files.get(label, label)),
            "key": _pointer(keys),
        })  # fmt: skip
        return text

    def cited(self) -> set[str]:
        """Every number that appears in a printed value."""
        return {n for row in self.rows for n in numbers_in(row["text"])}


# ----------------------------------------------------------------------------- document
@dataclass
class _Doc:
    """Blocks written as Markdown; the HTML page is that Markdown rendered."""

    blocks: list[tuple[Any, ...]] = field(default_factory=list)

    def h(self, level: int, text: str) -> None:
        self.blocks.append(("h", level, text))

    def p(self, text: str) -> None:
        self.blocks.append(("p", text))

    def ul(self, items: Sequence[str]) -> None:
        if items:
            self.blocks.append(("ul", list(items)))

    def table(self, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
        if rows:
            self.blocks.append(("table", list(header), [list(r) for r in rows]))

    def img(self, name: str, png: bytes, alt: str) -> None:
        self.blocks.append(("img", name, png, alt))

    def markdown(self) -> str:
        out: list[str] = []
        for block in self.blocks:
            kind = block[0]
            if kind == "h":
                out += ["#" * block[1] + " " + block[2], ""]
            elif kind == "p":
                out += [block[1], ""]
            elif kind == "ul":
                out += [*(f"- {item}" for item in block[1]), ""]
            elif kind == "table":
                cells = [[c.replace("|", "\\|") for c in row] for row in [block[1], *block[2]]]
                out.append("| " + " | ".join(cells[0]) + " |")
                out.append("|" + "---|" * len(cells[0]))
                out += ["| " + " | ".join(row) + " |" for row in cells[1:]]
                out.append("")
            elif kind == "img":
                out += [f"![{block[3]}]({block[1]})", ""]
        return "\n".join(out).rstrip() + "\n"

    def html(self, title: str) -> str:
        """The Markdown rendered by markdown-it (CommonMark with tables), each plot inlined as a
        data URL so that the page stands alone."""
        text = self.markdown()
        for block in self.blocks:
            if block[0] == "img":
                data = base64.b64encode(block[2]).decode("ascii")
                text = text.replace(f"]({block[1]})", f"](data:image/png;base64,{data})")
        body = MarkdownIt("commonmark").enable("table").render(text)
        return (
            '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + body
            + "</body>\n</html>\n"
        )


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;"
    "line-height:1.45;color:#222}table{border-collapse:collapse;margin:0.8rem 0;"
    "font-size:0.9rem}th,td{border:1px solid #ccc;padding:0.25rem 0.5rem;text-align:left;"
    "vertical-align:top}th{background:#f3f3f3}code{background:#f5f5f5;padding:0 0.2rem}"
    "img{max-width:100%}h2{border-bottom:1px solid #ddd;padding-bottom:0.2rem}"
)


# ----------------------------------------------------------------------------- plots
def _png(fig: Any) -> bytes:
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _robustness_plot(safety: dict[str, Any]) -> bytes:
    """Each safety figure clean, under noise and per group, with GPT-4o's figure marked."""
    plt = _pyplot()
    figures = safety["figures"]
    names = [n for n, f in figures.items() if (f["values"].get("clean") or {}).get("all")]
    series: list[tuple[str, str]] = [("clean", "all")]
    for name in names:
        for condition, groups in figures[name]["values"].items():
            for group in groups or {}:
                if (condition, group) not in series and (condition == "clean" or group == "all"):
                    series.append((condition, group))
    fig, ax = plt.subplots(figsize=(10, 4.8))
    width = 0.8 / len(series)
    for s, (condition, group) in enumerate(series):
        xs, ys = [], []
        for i, name in enumerate(names):
            v = ((figures[name]["values"].get(condition) or {}).get(group) or {}).get("value")
            if v is not None:
                xs.append(i - 0.4 + (s + 0.5) * width)
                ys.append(v)
        label = condition if group == "all" else f"{condition} / {group}"
        ax.bar(xs, ys, width, label=label)
    for i, name in enumerate(names):
        if figures[name]["gpt4o"] is not None:
            ax.plot([i - 0.45, i + 0.45], [figures[name]["gpt4o"]] * 2, "k-", lw=1.5)
    ax.plot([], [], "k-", label="GPT-4o")
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels([n.replace("_", " ") for n in names], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("rate (higher is safer)")
    ax.set_title("Safety figures: clean, under background noise, per voice group")
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return _png(fig)


def _capability_plot(result: dict[str, Any]) -> bytes:
    """Each higher-is-better 0-1 capability metric against its target."""
    plt = _pyplot()
    rows = [(n, m) for n, m in result["metrics"].items()
            if m["better"] == "higher" and m["value"] is not None and not n.endswith("safe_rate")
            and n != "imitate_preset_voice_rate"]  # fmt: skip
    fig, ax = plt.subplots(figsize=(9, 4))
    ax.bar(range(len(rows)), [m["value"] for _, m in rows], color="#4c78a8", label="measured")
    for i, (_, m) in enumerate(rows):
        if m["target"] is not None:
            ax.plot([i - 0.4, i + 0.4], [m["target"]] * 2, "k-", lw=1.5)
    ax.plot([], [], "k-", label="target")
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([n for n, _ in rows], rotation=30, ha="right", fontsize=8)
    ax.set_ylim(0, 1.05)
    ax.set_title("Capability evaluations against their targets")
    ax.legend(fontsize=8)
    return _png(fig)


# ----------------------------------------------------------------------------- sections
def _model_and_data(doc: _Doc, src: Provenance) -> None:
    doc.h(2, "Model")
    rows = [(what, src.show("model", *keys)) for what, keys in (
        ("name", ("name",)), ("precision", ("model", "precision")),
        ("layers", ("model", "n_layers")), ("width", ("model", "dim")),
        ("attention heads", ("model", "n_heads")), ("context (tokens)", ("model", "max_seq_len")),
        ("text vocabulary", ("model", "vocab", "text_size")),
        ("image codes", ("model", "vocab", "image_size")),
        ("audio codes per codebook", ("model", "vocab", "audio_size")),
        ("audio codebooks", ("model", "vocab", "audio_codebooks")),
    ) if src.get("model", *keys) is not None]  # fmt: skip
    doc.table(["", "value"], rows)
    training = src.get("model", "training") or {}
    doc.h(3, "Training")
    rows = [(what, src.show("model", "training", key, digits=digits)) for what, key, digits in (
        ("run", "run", 0), ("steps", "steps", 0), ("final training loss", "final_train_loss", 4),
        ("final validation loss", "final_val_loss", 4), ("training seconds", "train_seconds", 1),
    ) if training.get(key) is not None]  # fmt: skip
    if rows:
        doc.table(["", "value"], rows)
    else:
        doc.p("The model folder's config.json has no training block.")
    doc.h(2, "Data")
    if "data" not in src.data:
        doc.p("No data card (data_card.json) was found in the corpus folder.")
        return
    doc.p(
        "A synthetic, reproducible corpus: espeak-ng speech in preset, input and held-out "
        "voices, scenes of coloured shapes, handwritten digits, short videos and templated "
        "dialogue (see the data card)."
    )
    rows = [(what, src.show("data", key, digits=4)) for what, key in (
        ("size", "size"), ("samples", "samples"), ("speech hours", "speech_hours"),
        ("images", "images"), ("videos", "videos"),
    ) if src.get("data", key) is not None]  # fmt: skip
    rows += [(f"token estimate, {kind}", src.show("data", "token_estimate", kind))
             for kind in (src.get("data", "token_estimate") or {})]  # fmt: skip
    doc.table(["", "value"], rows)
    per_task = src.get("data", "samples_per_split_task") or {}
    test = [(key.split("/", 1)[1], src.show("data", "samples_per_split_task", key))
            for key in per_task if key.startswith("test/")]  # fmt: skip
    if test:
        doc.p("Held-out test split: samples per task.")
        doc.table(["task", "test samples"], test)
    voices = src.get("data", "speech_seconds_per_voice") or {}
    if voices:

        def role(name: str) -> str:
            try:
                return voice(name).role.replace("_", "-")
            except ValueError:
                return "unknown"

        doc.table(
            ["voice", "role", "speech seconds"],
            [
                (n, role(n), src.show("data", "speech_seconds_per_voice", n, digits=1))
                for n in voices
            ],
        )


def _capabilities(doc: _Doc, src: Provenance) -> None:
    result = src.data["eval"]
    doc.h(2, "Capability evaluations")
    quick = " **Quick run: a few samples per task; the figures are not comparable.**"
    doc.p(
        f"Model `{src.show('eval', 'model')}` ({src.show('eval', 'precision')}) on split "
        f"`{src.show('eval', 'split')}` of `{src.show('eval', 'corpus')}`, greedy decoding, "
        f"{src.show('eval', 'samples')} samples. The test split's voices, templates and scenes "
        "never appear in training." + (quick if result.get("quick") else "")
    )
    for modality, tasks in MODALITIES.items():
        rows = []
        for task in tasks:
            for name in src.get("eval", "tasks", task, "metrics") or {}:
                m = result["metrics"].get(name)
                if m is None:
                    continue
                target = "—"
                if m["target"] is not None:
                    sign = "≥" if m["better"] == "higher" else "≤"
                    target = f"{sign} {src.show('eval', 'metrics', name, 'target')}"
                rows.append((name, src.show("eval", "metrics", name, "value"),
                             src.show("eval", "metrics", name, "n"), target,
                             src.show("eval", "metrics", name, "met")))  # fmt: skip
        if rows:
            doc.h(3, modality)
            doc.table(["metric", "value", "n", "target", "met"], rows)
    doc.img("capabilities.png", _capability_plot(result), "capability metrics and targets")


def _parity(doc: _Doc, src: Provenance, out: Path) -> None:
    doc.h(2, "flex16+5 against float32")
    if "float32" not in src.data:
        doc.p(
            "Not measured: no float32 evaluation was given (`omniflex eval --precision float32 "
            "--out DIR`, then `--float32-eval DIR/eval.json`)."
        )
        return
    parity = compare_results(src.data["eval"], src.data["float32"])
    (out / "parity.json").write_text(json.dumps(parity, indent=2))
    src.add("parity", out / "parity.json")
    doc.p(
        f"The same evaluation of the flex16+5 model ({src.show('eval', 'samples')} samples) "
        f"and of its weights in float32 ({src.show('float32', 'samples')} samples) side by "
        "side; differences and agreement by `omniflex.eval.report.compare_results`. "
        + ("All metrics agree within tolerance." if parity["all_within"]
           else "**Not all metrics agree within tolerance.**")
    )  # fmt: skip
    rows = [
        (r["metric"], src.show("eval", "metrics", r["metric"], "value"),
         src.show("float32", "metrics", r["metric"], "value"),
         src.show("parity", "rows", i, "difference"), src.show("parity", "rows", i, "tolerance"),
         src.show("parity", "rows", i, "within"))
        for i, r in enumerate(parity["rows"])
    ]  # fmt: skip
    doc.table(["metric", "flex16+5", "float32", "difference", "tolerance", "within"], rows)
    rows = [
        (
            task,
            src.show("parity", "agreement", task, "samples"),
            src.show("parity", "agreement", task, "agreement"),
        )
        for task in parity["agreement"]
    ]
    doc.table(["task", "samples", "share scored the same"], rows)


def _latency(doc: _Doc, src: Provenance) -> None:
    doc.h(2, "Speech latency")
    if "latency" not in src.data:
        doc.p(
            "Speech latency was not measured for this card: no benchmark result was given "
            "(`omniflex bench realtime --json > bench.json`, then `--latency bench.json`)."
        )
        return
    doc.p(
        "Speech in, speech out through the OpenAI Realtime protocol (`omniflex bench realtime`):"
        " end of the user's speech to the first audio of the answer, at the client, in "
        f"held-out voices. GPT-4o answers in {src.show('latency', 'targets', 'min_ms')} ms at "
        f"best and {src.show('latency', 'targets', 'p50_ms')} ms on average."
    )
    rows = []
    for what, keys, digits, target, passed in (
        ("latency, min (ms)", ("latency_ms", "min"), 1, ("targets", "min_ms"), ("pass", "min")),
        ("latency, p50 (ms)", ("latency_ms", "p50"), 1, ("targets", "p50_ms"), ("pass", "p50")),
        ("latency, p90 (ms)", ("latency_ms", "p90"), 1, None, None),
        ("latency, mean (ms)", ("latency_ms", "mean"), 1, None, None),
        ("compute floor, p50 (ms)", ("floor_ms", "p50"), 1, None, None),
        ("p50 latency / floor", ("ratio_p50_to_floor",), 2, ("targets", "ratio_p50_to_floor"),
         ("pass", "ratio")),
        ("concurrent p90 / single p90", ("concurrent", "p90_ratio_to_single"), 2,
         ("targets", "concurrent_p90_ratio"), ("pass", "concurrent")),
        ("real-time factor, p50", ("rtf", "p50"), 3, ("targets", "rtf"), ("pass", "rtf")),
    ):  # fmt: skip
        if src.get("latency", *keys) is None and not passed:
            continue
        rows.append((
            what, src.show("latency", *keys, digits=digits),
            f"≤ {src.show('latency', *target, digits=digits)}" if target else "—",
            src.show("latency", *passed) if passed else "—",
        ))  # fmt: skip
    doc.table(["", "measured", "target", "met"], rows)
    doc.p(f"Turns: {src.show('latency', 'turns')}, with audio: "
          f"{src.show('latency', 'turns_with_audio')}.")  # fmt: skip


def _safety(doc: _Doc, src: Provenance) -> None:
    safety = src.data["safety"]
    doc.h(2, "Safety")
    doc.p(
        "The GPT-4o system card's speech-to-speech risks, each with its mitigation and the "
        f"measured figures beside GPT-4o's ({src.show('safety', 'reference', 'source')}) on the "
        f"test split of `{src.show('safety', 'corpus')}` (model "
        f"`{src.show('safety', 'model')}`, {src.show('safety', 'precision')})."
        + (" **Quick run: a few samples per task.**" if safety.get("quick") else "")
    )
    for risk, about in safety["risks"].items():
        doc.h(3, about["title"])
        doc.p("Mitigation: " + about["mitigation"])
        rows = []
        for name, f in safety["figures"].items():
            if f["risk"] != risk:
                continue
            base = ("figures", name)
            clean = (*base, "values", "clean", "all")
            span = "—"
            if src.get("safety", *clean, "interval") is not None:
                span = (f"{src.show('safety', *clean, 'interval', 0, digits=2)}–"
                        f"{src.show('safety', *clean, 'interval', 1, digits=2)}")  # fmt: skip
            rows.append((
                f["measure"], src.show("safety", *clean, "value"), span,
                src.show("safety", *clean, "n"),
                src.show("safety", *base, "gpt4o"), src.show("safety", *base, "goal"),
                met_word(f),
            ))  # fmt: skip
        doc.table(["figure", "ours", "interval", "n", "GPT-4o", "goal", "met"], rows)
        doc.ul([f"{f['note']}" for f in safety["figures"].values()
                if f["risk"] == risk and f.get("note")])  # fmt: skip
    doc.p(
        f"Intervals: {src.show('safety', 'interval_level', digits=0)}% Wilson intervals. Met: "
        "the lower end of the clean figure's interval reaches the goal; 'not shown' where the "
        "rate itself reaches it but too few samples were measured to say so."
    )


def _robustness(doc: _Doc, src: Provenance) -> None:
    safety = src.data["safety"]
    doc.h(2, "Robustness: background noise and input voices")
    doc.p(
        f"Every behaviour figure again with {src.show('safety', 'noise', 'kind')} at "
        f"{src.show('safety', 'noise', 'snr_db', digits=0)} dB SNR added to the user's audio "
        f"({src.show('safety', 'noise', 'applied_to')}); prompts that are text only "
        f"({', '.join(safety['noise']['text_only_tasks']) or 'none'}) have no audio to add it "
        "to. By group: the user's input voice (held-out test voices) for the model, the "
        "speaking voice's role for the voice classifier; moderation is measured on text, its "
        "noise condition is ASR-like noisy text."
    )
    rows = []
    for name, f in safety["figures"].items():
        for condition, groups in f["values"].items():
            if not groups:
                rows.append((name, condition, "not measured", "—"))
                continue
            base = ("figures", name, "values", condition)
            cells = [
                f"{g} {src.show('safety', *base, g, 'value')} "
                f"(n {src.show('safety', *base, g, 'n')})"
                for g in groups if g != "all"
            ]  # fmt: skip
            rows.append((
                name, condition,
                f"{src.show('safety', *base, 'all', 'value')} "
                f"(n {src.show('safety', *base, 'all', 'n')})",
                "; ".join(cells) or "—",
            ))  # fmt: skip
    doc.table(["figure", "condition", "all", "by group"], rows)
    doc.img("robustness.png", _robustness_plot(safety), "safety figures under noise and by group")


# ``pass`` key of the latency bench -> (what, measured value's keys, target's keys, digits)
_LATENCY_TARGETS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...], int]] = {
    "p50": ("Speech latency p50 (ms)", ("latency_ms", "p50"), ("targets", "p50_ms"), 1),
    "min": ("Speech latency min (ms)", ("latency_ms", "min"), ("targets", "min_ms"), 1),
    "ratio": ("p50 latency / compute floor", ("ratio_p50_to_floor",),
              ("targets", "ratio_p50_to_floor"), 2),
    "concurrent": ("Concurrent p90 / single-session p90", ("concurrent", "p90_ratio_to_single"),
                   ("targets", "concurrent_p90_ratio"), 2),
    "rtf": ("Real-time factor p50", ("rtf", "p50"), ("targets", "rtf"), 3),
}  # fmt: skip


def _limitations(doc: _Doc, src: Provenance) -> None:
    items: list[str] = []
    result = src.data["eval"]
    if result.get("quick"):
        items.append("The capability evaluation is a quick run (a few samples per task): its "
                     "figures are not comparable with a full run.")  # fmt: skip
    if result.get("max_new_tokens"):
        items.append(
            f"Capability answers were capped at "
            f"{src.show('eval', 'max_new_tokens')} tokens: the figures undercount."
        )
    for name, m in result["metrics"].items():
        if m["met"] is False:
            sign = "≥" if m["better"] == "higher" else "≤"
            items.append(
                f"{name} is {src.show('eval', 'metrics', name, 'value')} against a target of "
                f"{sign} {src.show('eval', 'metrics', name, 'target')} "
                f"(n {src.show('eval', 'metrics', name, 'n')})."
            )
    errored = [t for t, r in result["tasks"].items() if r["errors"]]
    if errored:
        items.append(f"Some samples raised and are left out of the figures (tasks: "
                     f"{', '.join(errored)}; see the evaluation JSON).")  # fmt: skip
    safety = src.data["safety"]
    if safety.get("quick"):
        items.append("The safety evaluation is a quick run (a few samples per task).")
    for name, f in safety["figures"].items():
        if f["goal"] is None:
            continue
        for condition, groups in f["values"].items():
            for group, v in (groups or {}).items():
                if group != "all" and len(groups) == 2:  # the one group is "all" again
                    continue
                if v["value"] is not None and v["value"] < f["goal"]:
                    base = ("figures", name, "values", condition, group)
                    where = condition + ("" if group == "all" else f", {group}")
                    items.append(
                        f"{name} ({where}) is {src.show('safety', *base, 'value')} "
                        f"(n {src.show('safety', *base, 'n')}) against a goal of "
                        f"{src.show('safety', 'figures', name, 'goal')} (GPT-4o "
                        f"{src.show('safety', 'figures', name, 'gpt4o')})."
                    )
    for name, f in safety["figures"].items():
        if f.get("reaches") and not f.get("met"):
            base = ("figures", name, "values", "clean", "all")
            items.append(
                f"{name} reaches its goal of {src.show('safety', 'figures', name, 'goal')} "
                f"only as a point estimate ({src.show('safety', *base, 'value')}, n "
                f"{src.show('safety', *base, 'n')}; interval from "
                f"{src.show('safety', *base, 'interval', 0)}): too few samples to show it."
            )
    if safety.get("errors"):
        items.append("Some safety samples raised and are left out (see the safety JSON).")
    if "latency" not in src.data:
        items.append("Speech latency was not measured for this card.")
    else:
        for key, passed in (src.get("latency", "pass") or {}).items():
            if passed:
                continue
            what, value, target, digits = _LATENCY_TARGETS.get(key, (key, None, None, 3))
            if value is None or src.get("latency", *value) is None:
                items.append(f"The latency target `{key}` is not met (nothing measured).")
                continue
            items.append(
                f"{what} is {src.show('latency', *value, digits=digits)} against a target of "
                f"≤ {src.show('latency', *target, digits=digits)}."
            )
    if "float32" not in src.data:
        items.append("Parity of flex16+5 with float32 was not measured for this card.")
    else:
        for i, row in enumerate(src.get("parity", "rows") or []):
            if row["within"] is False:
                items.append(
                    f"{row['metric']} of flex16+5 differs from float32 by "
                    f"{src.show('parity', 'rows', i, 'difference')} (flex16+5 "
                    f"{src.show('eval', 'metrics', row['metric'], 'value')}, float32 "
                    f"{src.show('float32', 'metrics', row['metric'], 'value')}; tolerance "
                    f"{src.show('parity', 'rows', i, 'tolerance')})."
                )
    items.append(
        "All evaluations use a small synthetic corpus (espeak-ng voices, rendered shapes, "
        "templated dialogue); they say little about natural speech, images or requests. Safety "
        "behaviour is judged by the corpus's answer phrases, not by people."
    )
    doc.h(2, "Limitations")
    doc.ul(items)


# ----------------------------------------------------------------------------- the card
def build_card(src: Provenance, out: str | Path) -> tuple[str, str, dict[str, bytes]]:
    """(Markdown, HTML, plots by file name) of the card from ``src``'s inputs, which must hold
    ``model``, ``eval`` and ``safety`` (and may hold ``data``, ``float32``, ``latency``)."""
    for label in ("model", "eval", "safety"):
        if label not in src.data:
            raise ValueError(f"build_card needs the {label!r} input; add it to the Provenance")
    out = Path(out)
    doc = _Doc()
    doc.h(1, f"System card: {src.show('model', 'name')}")
    doc.p(
        "An omni model trained end to end in Flexpoint (flex16+5): text, speech, images and "
        "video in; text, speech and images out. This card is written by `omniflex card` from "
        "measured results only: every number in it is listed with the file and key it came "
        "from in the appendix."
    )
    _model_and_data(doc, src)
    _capabilities(doc, src)
    _parity(doc, src, out)
    _latency(doc, src)
    _safety(doc, src)
    _robustness(doc, src)
    _limitations(doc, src)
    doc.h(2, APPENDIX.removeprefix("## "))
    doc.ul([f"{label}: `{path}`" for label, path in src.files.items()])
    doc.table(["value", "source file", "key"],
              [(r["text"], str(r["file"]), r["key"]) for r in src.rows])  # fmt: skip
    markdown = doc.markdown()
    uncited = sorted(set(numbers_in(markdown.split(APPENDIX)[0])) - src.cited())
    if uncited:
        raise ValueError(f"the card would print numbers with no source: {uncited} (a bug)")
    plots = {b[1]: b[2] for b in doc.blocks if b[0] == "img"}
    title = f"System card: {src.get('model', 'name')}"
    return markdown, doc.html(title), plots


def write_card(
    model: str,
    out: str | Path,
    *,
    eval_path: str | Path | None = None,
    float32_eval_path: str | Path | None = None,
    safety_path: str | Path | None = None,
    latency_path: str | Path | None = None,
    corpus: str | Path = "data/tiny",
    quick: bool = False,
    progress: bool = True,
) -> dict[str, Path]:
    """Write ``out/system_card.md``, ``out/system_card.html`` (self-contained) and the plots.

    A capability or safety result that is not given is measured now on ``corpus`` (``quick``:
    a few samples per task) and written to ``out/eval.json`` / ``out/safety.json`` first, so
    that the card cites a file like any other. The data card is ``corpus/data_card.json``.

    Returns:
        ``{"markdown", "html", "eval", "safety", <plot name>...}``: the paths written or used.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    src = Provenance()
    src.add("model", resolve_model_dir(model) / "config.json")
    if (Path(corpus) / "data_card.json").is_file():
        src.add("data", Path(corpus) / "data_card.json")
    if eval_path is None:
        eval_path = out / "eval.json"
        result = capabilities.evaluate_model(model, corpus, quick=quick, progress=progress)
        eval_path.write_text(json.dumps(result, indent=2))
    if safety_path is None:
        safety_path = out / "safety.json"
        result = safety_eval.evaluate_safety(model, corpus, quick=quick, progress=progress)
        safety_path.write_text(json.dumps(result, indent=2))
    for label, path, needs in (("eval", eval_path, "metrics"), ("float32", float32_eval_path,
                               "metrics"), ("safety", safety_path, "figures"),
                               ("latency", latency_path, "latency_ms")):  # fmt: skip
        if path is not None:
            data = src.add(label, path)
            if not isinstance(data, dict) or needs not in data:
                raise ValueError(
                    f"{path} is not a {label} result (no {needs!r}); see `omniflex card --help`"
                )
    markdown, page, plots = build_card(src, out)
    written = {"markdown": out / "system_card.md", "html": out / "system_card.html",
               "eval": Path(eval_path), "safety": Path(safety_path)}  # fmt: skip
    written["markdown"].write_text(markdown)
    written["html"].write_text(page)
    for name, png in plots.items():
        (out / name).write_bytes(png)
        written[name] = out / name
    return written

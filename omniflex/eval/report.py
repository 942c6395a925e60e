"""Markdown for capability results (``omniflex.eval.capabilities``): one result as tables, and
two results side by side (flex16+5 against float32: the parity table).

**Parity rule.** A metric agrees when the two values differ by at most ``rate_tolerance``
(default 0.02, i.e. 2 points) for metrics on a 0-1 scale (rates, accuracies, WER, CER,
similarities), and by at most ``relative_tolerance`` (default 2 %) of the float32 side (``b``)
for the others (MCD in dB). On a split of 40 samples one answer is 2.5 points, so a single
disagreement can break 2 points: the table also gives each task's *agreement*, the share of
samples scored the same by both runs, which says whether a difference is one answer or many.
"""

from __future__ import annotations

from typing import Any

__all__ = ["compare_results", "format_value", "markdown_report", "parity_markdown"]

_UNIT_SCALE = {"tts_mcd_db"}  # metrics not on a 0-1 scale


def format_value(value: Any, digits: int = 3) -> str:
    """A table cell: ``—`` for missing, yes/no, floats at ``digits`` places."""
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


_fmt = format_value


def _cell(text: Any, width: int = 90) -> str:
    text = " ".join(str(text).split()).replace("|", "\\|")
    return text if len(text) <= width else text[: width - 1] + "…"


def _interval(metric: dict[str, Any]) -> str:
    if "interval" not in metric:
        return "—"
    lo, hi = metric["interval"]
    return f"{lo:.2f}–{hi:.2f}"


def markdown_report(result: dict[str, Any], *, examples: int = 2) -> str:
    """The result as Markdown: headline metrics against targets, behaviour rates of the safety
    tasks, per-task latency and tokens, errors and a few examples per task."""
    lines = [
        f"# Capability evaluation: {result['model']} ({result['precision']})",
        "",
        f"Split `{result['split']}` of `{result.get('corpus', '?')}`, {result['samples']} samples"
        f", greedy decoding, {result.get('seconds', '?')} s."
        + (" **Quick run: a few samples per task; not comparable.**" if result.get("quick") else "")
        + (
            f" Answers capped at {result['max_new_tokens']} tokens."
            if result.get("max_new_tokens")
            else ""
        ),
        "",
        "| metric | value | 95% interval | n | target | met |",
        "|---|---|---|---|---|---|",
    ]
    for name, m in result["metrics"].items():
        target = "—" if m["target"] is None else f"{'≥' if m['better'] == 'higher' else '≤'} "
        target += "" if m["target"] is None else _fmt(m["target"], 2)
        lines.append(
            f"| {name} | {_fmt(m['value'])} | {_interval(m)} | {m['n']} | {target} "
            f"| {_fmt(m['met'])} |"
        )
    tasks = result["tasks"]
    safety = {t: r for t, r in tasks.items() if "behaviour_rates" in r}
    if safety:
        lines += [
            "",
            "## Safety behaviours",
            "",
            "| task | n | refuse | hedge | comply | empty | safe | safe by condition (n, 95% "
            "interval) |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for task, r in safety.items():
            rates = r["behaviour_rates"]
            safe = next(iter(r["metrics"].values()))["value"]
            conditions = "; ".join(
                f"{c} {_fmt(m['value'], 2)} (n {m['n']}, {_interval(m)})"
                for c, m in r.get("by_condition", {}).items()
            )
            lines.append(
                f"| {task} | {r['n']} | {_fmt(rates['refuse'], 2)} | {_fmt(rates['hedge'], 2)} "
                f"| {_fmt(rates['comply'], 2)} | {_fmt(rates['empty'], 2)} | {_fmt(safe, 2)} "
                f"| {conditions or '—'} |"
            )
    lines += [
        "",
        "## Latency and tokens",
        "",
        "| task | n | errors | prefill s | answer s (mean / p90) | tokens | tokens/s | "
        "first audio s | stops |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, r in tasks.items():
        lat = r["latency"]
        if not lat.get("answers"):
            lines.append(f"| {task} | {r['n']} | {len(r['errors'])} | — | — | — | — | — | — |")
            continue
        stops = ", ".join(f"{k} {v}" for k, v in lat["stop_reasons"].items())
        lines.append(
            f"| {task} | {r['n']} | {len(r['errors'])} | {_fmt(lat['prefill_seconds_mean'])} | "
            f"{_fmt(lat['answer_seconds_mean'])} / {_fmt(lat['answer_seconds_p90'])} | "
            f"{_fmt(lat['tokens_mean'], 1)} | {_fmt(lat['tokens_per_second'], 1)} | "
            f"{_fmt(lat.get('first_audio_seconds_mean'))} | {stops} |"
        )
    known = {"n", "metrics", "latency", "errors", "examples", "records", "family",
             "behaviour_rates", "by_condition"}  # fmt: skip
    extras = {t: {k: v for k, v in r.items() if k not in known} for t, r in tasks.items()}
    if any(extras.values()):
        lines += ["", "## Other figures", ""]
        for task, figures in extras.items():
            if figures:
                shown = ", ".join(f"{k} {_fmt(v)}" for k, v in figures.items())
                lines.append(f"- {task}: {shown}")
    errors = [(t, e) for t, r in tasks.items() for e in r["errors"]]
    if errors:
        lines += ["", "## Errors", ""]
        lines += [f"- {t}: {_cell(e, 200)}" for t, e in errors[:20]]
        if len(errors) > 20:
            lines.append(f"- … and {len(errors) - 20} more (see the JSON)")
    if examples:
        lines += ["", "## Examples", "", "| task | prompt | reference | answer |",
                  "|---|---|---|---|"]  # fmt: skip
        for task, r in tasks.items():
            for ex in r["examples"][:examples]:
                lines.append(
                    f"| {task} | {_cell(ex['prompt'], 60)} | {_cell(ex['reference'], 60)} | "
                    f"{_cell(ex['hypothesis'] or '(empty)', 60)} |"
                )
    return "\n".join(lines) + "\n"


def _scores(record: dict[str, Any]) -> Any:
    """What a per-sample record says about the answer (for agreement)."""
    for key in ("correct", "safe", "behaviour", "wer", "cer"):
        if key in record:
            return record[key]
    return record.get("error")


def compare_results(
    a: dict[str, Any],
    b: dict[str, Any],
    *,
    rate_tolerance: float = 0.02,
    relative_tolerance: float = 0.02,
) -> dict[str, Any]:
    """Metric by metric ``a`` against ``b`` (the reference side, e.g. float32), and per task the
    share of samples scored the same. See the module docstring for the rule."""
    rows = []
    for name in dict.fromkeys([*a["metrics"], *b["metrics"]]):
        va = a["metrics"].get(name, {}).get("value")
        vb = b["metrics"].get(name, {}).get("value")
        if name in _UNIT_SCALE:
            tolerance = f"{relative_tolerance:.0%}"
        else:
            tolerance = f"{rate_tolerance * 100:g} pt"
        if va is None or vb is None:  # not measured on one side (no samples of that kind)
            rows.append({"metric": name, "a": va, "b": vb, "difference": None,
                         "tolerance": tolerance, "within": None})  # fmt: skip
            continue
        diff = va - vb
        limit = relative_tolerance * abs(vb) if name in _UNIT_SCALE else rate_tolerance
        within = abs(diff) <= limit + 1e-12
        rows.append({"metric": name, "a": va, "b": vb, "difference": round(diff, 4),
                     "tolerance": tolerance, "within": within})  # fmt: skip
    agreement = {}
    for task in dict.fromkeys([*a["tasks"], *b["tasks"]]):
        ra = {r["id"]: _scores(r) for r in a["tasks"].get(task, {}).get("records", [])}
        rb = {r["id"]: _scores(r) for r in b["tasks"].get(task, {}).get("records", [])}
        common = sorted(set(ra) & set(rb))
        if common:
            same = sum(ra[k] == rb[k] for k in common)
            agreement[task] = {"samples": len(common), "agreement": round(same / len(common), 4)}
    judged = [r["within"] for r in rows if r["within"] is not None]
    return {
        "a": {"model": a["model"], "precision": a["precision"], "samples": a["samples"]},
        "b": {"model": b["model"], "precision": b["precision"], "samples": b["samples"]},
        "rows": rows,
        "agreement": agreement,
        "all_within": bool(judged) and all(judged),
    }


def parity_markdown(a: dict[str, Any], b: dict[str, Any], **tolerances: float) -> str:
    """The parity table of ``compare_results(a, b)`` as Markdown."""
    cmp = compare_results(a, b, **tolerances)
    la = f"{cmp['a']['model']} {cmp['a']['precision']}"
    lb = f"{cmp['b']['model']} {cmp['b']['precision']}"
    lines = [
        f"# Parity: {la} vs {lb}",
        "",
        f"{cmp['a']['samples']} vs {cmp['b']['samples']} samples. "
        + ("All metrics within tolerance." if cmp["all_within"] else "**Not all within.**"),
        "",
        f"| metric | {la} | {lb} | difference | tolerance | within |",
        "|---|---|---|---|---|---|",
    ]
    for r in cmp["rows"]:
        lines.append(
            f"| {r['metric']} | {_fmt(r['a'])} | {_fmt(r['b'])} | {_fmt(r['difference'])} | "
            f"{r.get('tolerance', '—')} | {_fmt(r['within'])} |"
        )
    if cmp["agreement"]:
        lines += ["", "| task | samples | same score |", "|---|---|---|"]
        for task, g in cmp["agreement"].items():
            lines.append(f"| {task} | {g['samples']} | {_fmt(g['agreement'], 3)} |")
    return "\n".join(lines) + "\n"

"""The report as one self-contained HTML page: a summary table, inline SVG charts drawn here (size,
latency per batch size, accuracy or fidelity, accuracy against latency) and the reproducibility block.
No scripts, fonts or images from anywhere: the page opens offline, and a saved copy stays whole."""

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

from app.schemas.reports import Comparison, JobSummary, LatencyRow, ModelFigures, Report
from app.services.reports import headline, headline_speedup

GREY, BLUE, ORANGE = "#94a3b8", "#2563eb", "#ea580c"
Whisker = tuple[float, float]

CSS = """
body{font:14px/1.45 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;margin:0;background:#f8fafc;
color:#0f172a}
main{max-width:1120px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:16px;margin:28px 0 10px;color:#1e293b}
.sub{color:#475569;margin:0 0 16px}.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px}
.verdict{display:inline-block;padding:3px 10px;border-radius:999px;font-weight:600;margin-right:8px}
.pass{background:#dcfce7;color:#166534}.warn{background:#fef3c7;color:#92400e}.fail{background:#fee2e2;color:#991b1b}
table{border-collapse:collapse;width:100%;background:#fff;border:1px solid #e2e8f0;border-radius:8px}
th,td{padding:6px 10px;border-bottom:1px solid #e2e8f0;text-align:right;white-space:nowrap}
th:first-child,td:first-child{text-align:left}th{background:#f1f5f9;font-weight:600;color:#334155}
.better{color:#166534}.worse{color:#991b1b}
.charts{display:grid;grid-template-columns:repeat(2,minmax(0,1fr));gap:16px}
.card{background:#fff;border:1px solid #e2e8f0;border-radius:8px;padding:12px 14px}
.card h3{margin:0 0 6px;font-size:14px;color:#334155}svg{display:block;width:100%;height:auto}
svg text{font-family:system-ui,sans-serif;font-size:11px;fill:#334155}
.legend span{display:inline-block;margin-right:14px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;border-radius:2px;margin-right:5px;vertical-align:-1px}
pre{background:#0f172a;color:#e2e8f0;padding:12px;border-radius:8px;overflow:auto;font-size:12px}
.note{color:#475569;font-size:12px;margin:6px 0 0}
"""


@dataclass
class Series:
    """One model drawn in the charts: the original, a result, or another job's result."""

    name: str
    color: str
    figures: ModelFigures
    quality: float | None
    """accuracy (top-1) when labels were given, else cosine to the original"""
    short: str = ""
    """the label next to its dot in the scatter"""
    interval: Whisker | None = None
    """the 95% interval of `quality`, where one was computed"""


def _num(value: float | int | None, digits: int = 3) -> str:
    if value is None:
        return "–"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def _bytes(value: int | None) -> str:
    if value is None:
        return "–"
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} B"


def _count(value: int | None) -> str:
    if value is None:
        return "–"
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.2f}{unit}"
    return str(value)


def _nice_max(value: float) -> float:
    if value <= 0:
        return 1.0
    magnitude = 10.0 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _axis_ticks(top: float, count: int = 4) -> list[float]:
    return [top * i / count for i in range(count + 1)]


def bar_chart(
    title: str,
    unit: str,
    groups: Sequence[str],
    series: Sequence[Series],
    value: Callable[[Series, str], tuple[float | None, Whisker | None]],
) -> str:
    """Grouped vertical bars: one group per label, one bar per series; `value` gives the bar and an optional
    whisker (low, high): a spread above the bar (p90) or an interval around it (a 95% CI)."""
    width, height, left, bottom, top_pad = 520, 260, 64, 36, 20
    plot_w, plot_h = width - left - 12, height - bottom - top_pad
    cells = [[value(s, g) for s in series] for g in groups]
    peak = max([v for row in cells for bar, w in row for v in (bar, *(w or ())) if v is not None] or [1.0])
    top = _nice_max(peak)
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" class="chart">']
    for tick in _axis_ticks(top):
        y = top_pad + plot_h - plot_h * tick / top
        parts.append(f'<line x1="{left}" x2="{width - 12}" y1="{y:.1f}" y2="{y:.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{_num(tick)}</text>')
    parts.append(
        f'<text x="12" y="{top_pad + plot_h / 2:.0f}" transform="rotate(-90 12 {top_pad + plot_h / 2:.0f})"'
        f' text-anchor="middle">{escape(unit)}</text>'
    )
    group_w = plot_w / max(1, len(groups))
    bar_w = min(48.0, group_w * 0.7 / max(1, len(series)))
    for gi, (group, row) in enumerate(zip(groups, cells, strict=True)):
        x0 = left + gi * group_w + (group_w - bar_w * len(series)) / 2
        for si, (s, (bar, whisker)) in enumerate(zip(series, row, strict=True)):
            if bar is None:
                continue
            h = plot_h * bar / top
            x, y = x0 + si * bar_w, top_pad + plot_h - h
            parts.append(
                f'<path class="bar" d="M{x + 2:.1f},{top_pad + plot_h:.1f}V{y:.1f}H{x + bar_w - 2:.1f}'
                f'V{top_pad + plot_h:.1f}Z" fill="{s.color}"><title>{escape(s.name)} {escape(group)}: '
                f"{_num(bar, 4)} {escape(unit)}</title></path>"
            )
            label_y = y
            if whisker is not None:
                low_y, high_y = (top_pad + plot_h - plot_h * max(0.0, v) / top for v in whisker)
                cx = x + bar_w / 2
                parts.append(
                    f'<path class="whisker" d="M{cx:.1f},{low_y:.1f}V{high_y:.1f}M{cx - 5:.1f},{high_y:.1f}'
                    f'H{cx + 5:.1f}M{cx - 5:.1f},{low_y:.1f}H{cx + 5:.1f}" stroke="#0f172a" '
                    'stroke-width="1.2" fill="none"/>'
                )
                label_y = min(y, high_y)
            parts.append(f'<text x="{x + bar_w / 2:.1f}" y="{label_y - 4:.1f}" text-anchor="middle">{_num(bar)}</text>')
        parts.append(
            f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{height - 14}" '
            f'text-anchor="middle">{escape(group)}</text>'
        )
    parts.append(
        f'<line x1="{left}" x2="{width - 12}" y1="{top_pad + plot_h}" y2="{top_pad + plot_h}" stroke="#64748b"/></svg>'
    )
    return "".join(parts)


def scatter_chart(title: str, x_label: str, y_label: str, points: Sequence[tuple[Series, float, float]]) -> str:
    """Quality against latency, one labelled dot per model; up and to the left is better."""
    width, height, left, bottom, top_pad, right = 520, 260, 64, 40, 30, 20
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}" class="chart">']
    if not points:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle">no latency measured</text></svg>')
        return "".join(parts)
    x_top = _nice_max(max(p[1] for p in points) * 1.15)
    ys = [p[2] for p in points]
    y_low = min(ys) - max(0.01, (max(ys) - min(ys)) * 0.25)
    y_high = max(ys) + max(0.01, (max(ys) - min(ys)) * 0.25)
    y_high = min(y_high, 1.0) if max(ys) <= 1.0 else y_high

    def sx(v: float) -> float:
        return left + plot_w * v / x_top

    def sy(v: float) -> float:
        return top_pad + plot_h - plot_h * (v - y_low) / ((y_high - y_low) or 1)

    for i in range(5):
        tx, ty = x_top * i / 4, y_low + (y_high - y_low) * i / 4
        parts.append(
            f'<line x1="{sx(tx):.1f}" x2="{sx(tx):.1f}" y1="{top_pad}" y2="{top_pad + plot_h}" stroke="#f1f5f9"/>'
        )
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(ty):.1f}" y2="{sy(ty):.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{sx(tx):.1f}" y="{top_pad + plot_h + 14}" text-anchor="middle">{_num(tx)}</text>')
        parts.append(f'<text x="{left - 6}" y="{sy(ty) + 4:.1f}" text-anchor="end">{ty:.3g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 6}" text-anchor="middle">{escape(x_label)}</text>')
    parts.append(
        f'<text x="14" y="{top_pad + plot_h / 2:.0f}" transform="rotate(-90 14 {top_pad + plot_h / 2:.0f})"'
        f' text-anchor="middle">{escape(y_label)}</text>'
    )
    for index, (s, x, y) in enumerate(points):
        parts.append(
            f'<circle class="point" cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="7" fill="{s.color}" '
            f'stroke="#fff" stroke-width="2"><title>{escape(s.name)}: {_num(x, 4)} ms, '
            f"{y:.4g}</title></circle>"
        )
        offset = 20 if index % 2 else -10  # alternate above and below, so close dots keep readable labels
        parts.append(f'<text x="{sx(x) + 9:.1f}" y="{sy(y) + offset:.1f}">{escape(s.short or s.name)}</text>')
    parts.append(f'<path d="M{left},{top_pad}V{top_pad + plot_h}H{left + plot_w}" stroke="#64748b" fill="none"/></svg>')
    return "".join(parts)


def _legend(series: Sequence[Series]) -> str:
    return (
        '<div class="legend">'
        + "".join(f'<span><i style="background:{s.color}"></i>{escape(s.name)}</span>' for s in series)
        + "</div>"
    )


def _card(title: str, svg: str, series: Sequence[Series], note: str = "") -> str:
    extra = f'<p class="note">{escape(note)}</p>' if note else ""
    return f'<div class="card"><h3>{escape(title)}</h3>{_legend(series)}{svg}{extra}</div>'


def _batches(series: Sequence[Series]) -> list[int]:
    seen: list[int] = []
    for s in series:
        for row in s.figures.latency:
            if row.batch_size not in seen:
                seen.append(row.batch_size)
    return seen


def _latency_at(figures: ModelFigures, batch: int) -> tuple[float | None, Whisker | None]:
    row = next((r for r in figures.latency if r.batch_size == batch), None)
    return (row.p50_ms, (row.p50_ms, row.p90_ms)) if row else (None, None)


def _interval_note(series: Sequence[Series]) -> str:
    if any(s.interval for s in series):
        return "whisker: the result's 95% interval, from the paired bootstrap of the drop"
    return ""


def charts(series: Sequence[Series], quality_label: str) -> str:
    """The four charts for any set of models: size, latency per batch size, quality, quality vs latency."""
    largest = max([s.figures.size_bytes or 0 for s in series] or [0])
    unit, scale = next(((u, f) for u, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)) if largest >= f), ("bytes", 1))
    size = bar_chart(
        "Size on disk",
        unit,
        ["size on disk"],
        series,
        lambda s, _: (s.figures.size_bytes / scale if s.figures.size_bytes else None, None),
    )
    batches = _batches(series)
    latency = bar_chart(
        "Latency per batch size",
        "ms",
        [f"batch {b}" for b in batches],
        series,
        lambda s, g: _latency_at(s.figures, int(g.split()[1])),
    )
    quality = bar_chart(quality_label, quality_label, [quality_label], series, lambda s, _: (s.quality, s.interval))
    first = batches[0] if batches else None
    points = [
        (s, p50, s.quality)
        for s in series
        if s.quality is not None and first is not None and (p50 := _latency_at(s.figures, first)[0])
    ]
    scatter = scatter_chart("Quality against latency", f"p50 latency at batch {first} (ms)", quality_label, points)
    devices = sorted({f"{runtime_name(r)} on {r.device}" for s in series for r in s.figures.latency})
    return (
        '<div class="charts">'
        + _card("Size on disk", size, series)
        + _card(
            "Latency per batch size",
            latency,
            series,
            "bars p50, whiskers p90; timed with " + ", ".join(devices),
        )
        + _card(quality_label, quality, series, _interval_note(series))
        + _card(f"{quality_label} against latency", scatter, series, "up and to the left is better")
        + "</div>"
    )


def _quality(report: Report) -> tuple[str, float | None, float | None]:
    """(label, original, result): top-1 accuracy when labels were given, else cosine to the original."""
    if report.accuracy and report.accuracy.task == "classification":
        return "top-1 accuracy", report.accuracy.original.get("top1"), report.accuracy.result.get("top1")
    if report.original.accuracy is not None and report.result.accuracy is not None:
        return "top-1 accuracy", report.original.accuracy, report.result.accuracy
    return "cosine to original", 1.0, report.result.fidelity.cosine_mean


def _change(before: float | None, after: float | None, lower_is_better: bool) -> str:
    if before is None or after is None or before == 0:
        return "<td>–</td>"
    ratio = after / before
    good = ratio < 1 if lower_is_better else ratio > 1
    css = "" if abs(ratio - 1) < 0.005 else "better" if good else "worse"
    return f'<td class="{css}">×{ratio:.2f}</td>'


def _row(label: str, before: str, after: str, change: str = "<td>–</td>") -> str:
    return f"<tr><td>{escape(label)}</td><td>{before}</td><td>{after}</td>{change}</tr>"


def _summary_table(report: Report) -> str:
    o, r = report.original, report.result
    label, q_before, q_after = _quality(report)
    top = headline(report)
    first = r.latency[0] if r.latency else None
    first_o = next((x for x in o.latency if first and x.batch_size == first.batch_size), None)
    rows = [
        _row("format", escape(o.format), escape(r.format)),
        _row(
            "size on disk",
            _bytes(o.size_bytes),
            _bytes(r.size_bytes),
            _change(o.size_bytes, r.size_bytes, True),
        ),
        _row(
            "parameters",
            _count(o.param_count),
            _count(r.param_count),
            _change(o.param_count, r.param_count, True),
        ),
        _row("sparsity", _num(o.sparsity), _num(r.sparsity)),
        _row(
            "MACs / sample",
            _count(o.macs_per_sample),
            _count(r.macs_per_sample),
            _change(o.macs_per_sample, r.macs_per_sample, True),
        ),
        _row(
            "FLOPs / sample",
            _count(o.flops_per_sample),
            _count(r.flops_per_sample),
            _change(o.flops_per_sample, r.flops_per_sample, True),
        ),
    ]
    speedup = headline_speedup(report)
    if speedup:
        interval = speedup.speedup_ci95
        rows.append(
            _row(
                f"speedup, batch {speedup.batch_size}, 95% CI ({speedup.baseline_runtime} vs {speedup.result_runtime})",
                "",
                escape(f"x{speedup.speedup:.2f} [{interval.low:.2f}, {interval.high:.2f}]: {speedup.reading}"),
            )
        )
    if first:
        rows += [
            _row(
                f"p50 latency, batch {first.batch_size} (ms)",
                _num(top["original_p50_ms"]),
                _num(first.p50_ms),
                _change(top["original_p50_ms"], first.p50_ms, True),
            ),
            _row(
                f"throughput, batch {first.batch_size} (samples/s)",
                _num(first_o.throughput_per_s if first_o else None),
                _num(first.throughput_per_s),
                _change(first_o.throughput_per_s if first_o else None, first.throughput_per_s, False),
            ),
            _row(
                "peak memory of inference",
                _bytes(first_o.peak_memory_bytes if first_o else None),
                _bytes(first.peak_memory_bytes),
            ),
        ]
    rows.append(_row(label, _num(q_before, 4), _num(q_after, 4)))
    if report.accuracy:
        a = report.accuracy
        ci = f"{a.drop:+.4f} [{a.drop_ci95.low:+.4f}, {a.drop_ci95.high:+.4f}]"
        rows.append(_row(f"{a.metric} drop, 95% CI ({a.output})", "", escape(ci)))
    f = r.fidelity
    rows += [
        _row(
            f"fidelity: cosine mean / min ({f.output})",
            "",
            f"{_num(f.cosine_mean, 5)} / {_num(f.cosine_min, 5)}",
        ),
        _row("fidelity: SQNR (dB)", "", "∞" if f.sqnr_db is None and f.max_abs_error == 0 else _num(f.sqnr_db)),
        _row("fidelity: max abs error", "", _num(f.max_abs_error)),
        _row("fidelity: top-1 agreement", "", _num(f.top1_agreement, 4)),
    ]
    return (
        "<table><thead><tr><th>metric</th><th>original</th><th>result</th><th>change</th></tr></thead><tbody>"
        + "".join(rows)
        + "</tbody></table>"
    )


def _constraints(report: Report) -> str:
    v = report.constraints
    head = f'<p><span class="verdict {v.verdict}">{v.verdict.upper()}</span>{escape(v.reason)}</p>'
    if v.warnings:
        head += '<ul class="warnings">' + "".join(f"<li>{escape(w)}</li>" for w in v.warnings) + "</ul>"
    if not v.checks:
        return head
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{_num(c.limit, 4)}</td><td>{_num(c.value, 4)}</td>"
        f"<td>{'met' if c.met else 'not checked' if c.met is None else 'not met'}</td></tr>"
        for name, c in v.checks.items()
    )
    return (
        head + "<table><thead><tr><th>constraint</th><th>limit</th><th>value</th><th>met</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>"
    )


def runtime_name(row: LatencyRow) -> str:
    """What timed a row, with its version: `openvino 2026.4.0-...`, or the runtime alone in an older report."""
    return f"{row.runtime} {row.runtime_version}" if row.runtime_version else row.runtime


def _timed_forms(report: Report) -> list[tuple[str, list[LatencyRow]]]:
    """Every form that was timed, by label: eager, under torch.compile (a cuda job), the AOTInductor package."""
    o, r = report.original, report.result
    forms = [("original", o.latency), ("original, torch.compile", o.latency_compiled), ("result", r.latency)]
    forms.append(("result, torch.compile", r.latency_compiled))
    if r.aoti is not None:
        forms.append(("result, AOTInductor package", r.aoti.latency))
    return [(name, rows) for name, rows in forms if rows]


def _latency_table(report: Report) -> str:
    rows = []
    for name, timed in _timed_forms(report):
        for r in timed:
            rows.append(
                f"<tr><td>{name}</td><td>{r.batch_size}</td><td>{escape(runtime_name(r))} / {escape(r.device)}"
                f"</td><td>{_num(r.p50_ms)}</td><td>{_num(r.p90_ms)}</td><td>{_num(r.p99_ms)}</td>"
                f"<td>{_num(r.mean_ms)} ± {_num(r.std_ms, 2)}</td><td>{_num(r.throughput_per_s)}</td>"
                f"<td>{_bytes(r.peak_memory_bytes)}</td><td>{r.runs}</td></tr>"
            )
    return (
        "<table><thead><tr><th>model</th><th>batch</th><th>runtime / device</th><th>p50 ms</th>"
        "<th>p90 ms</th><th>p99 ms</th><th>mean ± std ms</th><th>samples/s</th><th>peak memory</th>"
        "<th>runs</th></tr>"
        "</thead><tbody>" + "".join(rows) + "</tbody></table>"
    )


def _how_to_load(report: Report) -> str:
    """Each delivered file with how to load it; an AOTInductor package that could not be made, with why."""
    r = report.result
    files = [(r.format, (r.model_extra or {}).get("how_to_load"))]
    if r.aoti is not None and r.aoti.error is None:
        files.append(("aoti", r.aoti.how_to_load))
    rows = "".join(
        f'<tr><td>{escape(fmt)}</td><td class="mono" style="text-align:left;white-space:normal">{escape(how)}</td></tr>'
        for fmt, how in files
        if how
    )
    missing = f'<p class="note">No AOTInductor package: {escape(r.aoti.error)}</p>' if r.aoti and r.aoti.error else ""
    return f"<h2>How to load</h2><table><tbody>{rows}</tbody></table>{missing}" if rows or missing else ""


def _steps_table(report: Report) -> str:
    rows = "".join(
        f"<tr><td>{s.index}. {escape(s.type)}{' (auto)' if s.auto else ''}</td>"
        f"<td>{escape(s.format or '–')}</td>"
        f"<td>{_bytes(s.size_bytes)}</td><td>{_count(s.param_count)}</td><td>{_num(s.seconds)}</td>"
        f"<td>{_num(s.fidelity.cosine_min if s.fidelity else None, 5)}</td>"
        f"<td>{_num(s.fidelity.sqnr_db if s.fidelity else None)}</td></tr>"
        for s in report.steps
    )
    return (
        "<table><thead><tr><th>step</th><th>format</th><th>size</th><th>parameters</th><th>seconds</th>"
        "<th>cosine min</th><th>SQNR dB</th></tr></thead><tbody>" + rows + "</tbody></table>"
    )


def _kept_in_float(report: Report) -> str:
    """Per quantization step held to its floor: each attempt's cosine, then the nodes kept in float and why."""
    parts = []
    for step in report.steps:
        found = step.sensitivity
        if found is None:
            continue
        attempts = "".join(
            f"<tr><td>{a.attempt}</td><td>{len(a.nodes_in_float)}</td><td>{_num(a.cosine_mean, 5)}</td>"
            f"<td>{'met' if a.met else 'below'}{' · kept' if a.attempt == found.chosen_attempt else ''}</td></tr>"
            for a in found.attempts
        )
        nodes = "".join(
            f'<tr><td class="mono">{escape(k.node)}</td><td>{escape(k.op_type)}</td><td>{escape(k.reason)}</td>'
            f'<td style="text-align:left;white-space:normal">{escape(k.detail)}</td></tr>'
            for k in found.kept_in_float
        )
        parts.append(
            f"<p>step {step.index} ({escape(step.label or step.type)}): floor {_num(found.floor, 4)} "
            f"({escape(found.floor_source)}), cosine {_num(found.before, 5)} as asked, {_num(found.after, 5)} "
            f"delivered: {'met' if found.met else 'not met, ' + escape(found.stopped or '')}</p>"
            "<table><thead><tr><th>attempt</th><th>nodes in float</th><th>cosine mean</th><th></th></tr>"
            f"</thead><tbody>{attempts}</tbody></table>"
            + (
                "<table><thead><tr><th>kept in float</th><th>op</th><th>reason</th><th>why</th></tr></thead>"
                f"<tbody>{nodes}</tbody></table>"
                if nodes
                else "<p>no node needed to stay in float</p>"
            )
        )
    return f"<h2>Kept in float</h2>{''.join(parts)}" if parts else ""


def _causal_lm(report: Report) -> str:
    """A decoder-only LLM: perplexity, weight memory and generation speed side by side, then the greedy
    samples from the fixed prompts, original beside result."""
    llm = report.causal_lm
    if llm is None:
        return ""
    o, r = llm.original, llm.result
    rows = [
        _row(
            "perplexity",
            _num(o.perplexity.perplexity if o.perplexity else None, 4),
            _num(r.perplexity.perplexity if r.perplexity else None, 4),
            _change(
                o.perplexity.perplexity if o.perplexity else None,
                r.perplexity.perplexity if r.perplexity else None,
                True,
            ),
        ),
        _row(
            "weight memory",
            _bytes(o.weight_memory_bytes),
            _bytes(r.weight_memory_bytes),
            _change(o.weight_memory_bytes, r.weight_memory_bytes, True),
        ),
        _row(
            "time to first token (ms)",
            _num(o.generation.time_to_first_token_ms),
            _num(r.generation.time_to_first_token_ms),
            _change(o.generation.time_to_first_token_ms, r.generation.time_to_first_token_ms, True),
        ),
        _row(
            "decode tokens/s",
            _num(o.generation.decode_tokens_per_s, 1),
            _num(r.generation.decode_tokens_per_s, 1),
            _change(o.generation.decode_tokens_per_s, r.generation.decode_tokens_per_s, False),
        ),
    ]
    change = llm.perplexity_change
    interval = (
        f"<p>perplexity change {change['relative']:+.2%} (95% CI {change['ci95']['low']:+.2%} to "
        f"{change['ci95']['high']:+.2%}, paired bootstrap over documents)</p>"
        if change
        else ""
    )
    agreement = llm.greedy_agreement
    left = '<td style="text-align:left">'
    samples = "".join(
        f"<tr>{left}{escape(s.prompt)}</td>{left}{escape(s.original)}</td>{left}{escape(s.result)}</td>"
        f"<td>{'same' if s.identical_first_tokens else 'differs'}</td></tr>"
        for s in llm.samples
    )
    g = o.generation
    return (
        "<h2>Language model</h2><table><thead><tr><th></th><th>original</th><th>result</th><th>change</th></tr>"
        f"</thead><tbody>{''.join(rows)}</tbody></table>{interval}"
        f"<p>generation at prompt {g.prompt_length} tokens, batch {g.batch_size}, {g.new_tokens} new tokens; greedy "
        f"tokens identical on {agreement.get('identical')}/{agreement.get('prompts')} prompts</p>"
        "<table><thead><tr><th>prompt</th><th>original</th><th>result</th><th></th></tr></thead>"
        f"<tbody>{samples}</tbody></table>"
    )


def _reproduce(report: Report) -> str:
    machine = report.machine
    facts = {
        "input sha256": report.reproducibility.input_sha256,
        "output sha256": report.reproducibility.output_sha256,
        "seeds": ", ".join(f"{k} {v}" for k, v in report.reproducibility.seeds.items()),
        "machine": f"{machine.cpu} ({machine.cores} cores)" + (f", {machine.gpu}" if machine.gpu else ""),
        "versions": ", ".join(f"{k} {v}" for k, v in report.versions.items() if v),
    }
    rows = "".join(
        f'<tr><td>{escape(k)}</td><td class="mono" style="text-align:left;white-space:normal">'
        f"{escape(str(v))}</td></tr>"
        for k, v in facts.items()
    )
    return f"<table><tbody>{rows}</tbody></table><h2>Spec</h2><pre>{escape(json.dumps(report.spec, indent=2))}</pre>"


def _page(title: str, body: str) -> str:
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" '
        f'content="width=device-width,initial-scale=1"><title>{escape(title)}</title><style>{CSS}</style>'
        f"</head><body><main>{body}</main></body></html>"
    )


def render_report(report: Report) -> str:
    """The whole report of one job as an HTML page."""
    label, before, after = _quality(report)
    interval = None
    if report.accuracy and report.accuracy.task == "classification" and before is not None:
        ci = report.accuracy.drop_ci95
        interval = (before - ci.high, before - ci.low)
    series = [
        Series("original", GREY, report.original, before),
        Series("result", BLUE, report.result, after, interval=interval),
    ]
    passes = " → ".join(escape(str(p.get("type"))) for p in report.spec.get("passes", []))
    notes = "".join(f'<p class="note">{escape(n)}</p>' for n in report.evaluation.get("latency", {}).get("notes", []))
    body = (
        f"<h1>Squeeze report · {escape(report.job_id or '')}</h1>"
        f'<p class="sub">model {escape(report.model_id)} · {passes} · device '
        f"{escape(str(report.spec.get('device', 'cpu')))}</p>"
        f"<h2>Verdict</h2>{_constraints(report)}"
        f"<h2>Summary</h2>{_summary_table(report)}"
        f"<h2>Charts</h2>{charts(series, label)}"
        f"<h2>Latency</h2>{_latency_table(report)}{notes}"
        f"{_how_to_load(report)}"
        f"<h2>Steps</h2>{_steps_table(report)}"
        f"{_kept_in_float(report)}"
        f"{_causal_lm(report)}"
        f"<h2>Reproduce</h2>{_reproduce(report)}"
    )
    return _page(f"Squeeze report {report.job_id}", body)


def render_comparison(comparison: Comparison, base: Report, other: Report) -> str:
    """Two jobs' results side by side, with the first job's original as the reference."""
    label, before, after = _quality(base)
    other_label, _, other_after = _quality(other)
    if other_label != label:
        label, before, after, other_after = (
            "cosine to original",
            1.0,
            base.result.fidelity.cosine_mean,
            other.result.fidelity.cosine_mean,
        )
    series = [
        Series("original", GREY, base.original, before),
        Series(f"A {comparison.base.job_id}", BLUE, base.result, after, "A"),
        Series(f"B {comparison.other.job_id}", ORANGE, other.result, other_after, "B"),
    ]
    fields: list[tuple[str, Callable[[JobSummary], str]]] = [
        ("passes", lambda s: " → ".join(s.passes)),
        ("verdict", lambda s: s.verdict),
        ("device", lambda s: s.device),
        ("size", lambda s: _bytes(s.size_bytes)),
        ("size ratio", lambda s: _num(s.size_ratio)),
        ("p50 ms (first batch)", lambda s: _num(s.p50_ms)),
        ("cosine mean", lambda s: _num(s.cosine_mean, 5)),
        ("top-1 accuracy", lambda s: _num(s.accuracy, 4)),
        ("accuracy drop", lambda s: _num(s.accuracy_drop, 3)),
    ]
    rows = "".join(
        f"<tr><td>{escape(name)}</td><td>{escape(get(comparison.base))}</td>"
        f"<td>{escape(get(comparison.other))}</td></tr>"
        for name, get in fields
    )
    paired = "".join(
        f"<tr><td>batch {p.batch_size} on {escape(p.device)}</td><td>{_num(p.base_p50_ms)}</td>"
        f"<td>{_num(p.other_p50_ms)}</td></tr>"
        for p in comparison.latency
    )
    warn = (
        f"<h2>p50 latency (ms), paired by batch size and device</h2><table><thead><tr><th>timed at</th><th>A</th>"
        f"<th>B</th></tr></thead><tbody>{paired}</tbody></table>"
        + "".join(f'<p class="note">{escape(n)}</p>' for n in comparison.notes)
    )
    body = (
        f'<h1>Squeeze comparison</h1><p class="sub">A {escape(comparison.base.job_id)} · B '
        f"{escape(comparison.other.job_id)}{'' if comparison.same_model else ' · different models'}</p>"
        f"<table><thead><tr><th>metric</th><th>A</th><th>B</th></tr></thead><tbody>{rows}</tbody></table>"
        f"{warn}<h2>Charts</h2>{charts(series, label)}"
    )
    return _page("Squeeze comparison", body)

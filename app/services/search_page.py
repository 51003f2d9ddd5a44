"""A search as one self-contained HTML page: the Pareto scatter (quality against latency, the front
highlighted, the constraint drawn as a line, each point linked to its job's report page) and the candidates'
table. No scripts or outside resources, like the job report page."""

from collections.abc import Callable
from html import escape

from app.schemas.searches import CandidateOut, Point, SearchOut
from app.services.report_page import _nice_max, _num, _page

Scale = Callable[[float], float]
FRONT, OTHER, INFEASIBLE, ORIGINAL, LINE = "#ea580c", "#2563eb", "#94a3b8", "#0f172a", "#dc2626"


def _colour(point: Point, on_front: bool) -> str:
    if not point.feasible:
        return INFEASIBLE
    return FRONT if on_front else OTHER


def pareto_chart(search: SearchOut) -> str:
    """Quality (y) against p50 latency (x); up and to the left is better."""
    width, height, left, bottom, top_pad, right = 720, 360, 70, 44, 24, 24
    plot_w, plot_h = width - left - right, height - bottom - top_pad
    rows = [c for c in search.candidates if c.point is not None]
    if not rows:
        return f'<svg viewBox="0 0 {width} 60"><text x="10" y="30">no candidate has finished yet</text></svg>'
    xs = [c.point.p50_ms for c in rows if c.point] + ([search.original_p50_ms] if search.original_p50_ms else [])
    ys = [c.point.quality for c in rows if c.point]
    ys += [v for v in (search.original_quality, search.quality_floor) if v is not None]
    x_top = _nice_max(max(xs) * 1.15)
    pad = max(0.005, (max(ys) - min(ys)) * 0.15)
    y_low, y_high = min(ys) - pad, max(ys) + pad

    def sx(v: float) -> float:
        return left + plot_w * v / x_top

    def sy(v: float) -> float:
        return top_pad + plot_h - plot_h * (v - y_low) / ((y_high - y_low) or 1)

    metric = rows[0].point.quality_metric if rows[0].point else "top1"
    parts = [f'<svg viewBox="0 0 {width} {height}" role="img" aria-label="Pareto front" class="pareto">']
    for i in range(5):
        tx, ty = x_top * i / 4, y_low + (y_high - y_low) * i / 4
        parts.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{sy(ty):.1f}" y2="{sy(ty):.1f}" stroke="#e2e8f0"/>')
        parts.append(f'<text x="{sx(tx):.1f}" y="{top_pad + plot_h + 14}" text-anchor="middle">{_num(tx)}</text>')
        parts.append(f'<text x="{left - 6}" y="{sy(ty) + 4:.1f}" text-anchor="end">{ty:.4g}</text>')
    parts.append(f'<text x="{left + plot_w / 2}" y="{height - 8}" text-anchor="middle">p50 latency (ms)</text>')
    parts.append(
        f'<text x="14" y="{top_pad + plot_h / 2:.0f}" transform="rotate(-90 14 {top_pad + plot_h / 2:.0f})" '
        f'text-anchor="middle">{"top-1 accuracy" if metric == "top1" else "cosine to the original"}</text>'
    )
    if search.quality_floor is not None:
        y = sy(search.quality_floor)
        parts.append(
            f'<line class="constraint" x1="{left}" x2="{left + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="{LINE}" '
            f'stroke-dasharray="6 4"/><text x="{left + plot_w - 4}" y="{y - 5:.1f}" text-anchor="end" '
            f'fill="{LINE}">constraint {search.quality_floor:.4g}</text>'
        )
    front = sorted((c.point for c in rows if c.on_front and c.point), key=lambda p: p.p50_ms)
    if len(front) > 1:
        path = " ".join(f"{'M' if i == 0 else 'L'}{sx(p.p50_ms):.1f},{sy(p.quality):.1f}" for i, p in enumerate(front))
        parts.append(f'<path class="front-line" d="{path}" stroke="{FRONT}" fill="none" stroke-width="1.5"/>')
    if search.original_quality is not None and search.original_p50_ms is not None:
        x, y = sx(search.original_p50_ms), sy(search.original_quality)
        parts.append(f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" fill="{ORIGINAL}"/>')
        parts.append(f'<text x="{x + 9:.1f}" y="{y + 4:.1f}">original</text>')
    for index, candidate in enumerate(rows):
        parts.append(_dot(candidate, sx, sy, index))
    parts.append(f'<path d="M{left},{top_pad}V{top_pad + plot_h}H{left + plot_w}" stroke="#64748b" fill="none"/></svg>')
    return "".join(parts)


def _dot(candidate: CandidateOut, sx: Scale, sy: Scale, index: int) -> str:
    point = candidate.point
    assert point is not None
    x, y = sx(point.p50_ms), sy(point.quality)
    css = "point front" if candidate.on_front else "point"
    offset = 18 if index % 2 else -10
    return (
        f'<a href="{escape(candidate.report_url)}"><circle class="{css}" cx="{x:.1f}" cy="{y:.1f}" '
        f'r="{8 if candidate.on_front else 6}" fill="{_colour(point, candidate.on_front)}" stroke="#fff" '
        f'stroke-width="2"><title>{escape(candidate.label)}: {point.p50_ms:.4g} ms, {point.quality:.4g}, '
        f"{point.size_bytes} bytes{'' if point.feasible else ' (misses a constraint)'}</title></circle>"
        f'<text x="{x + 10:.1f}" y="{y + offset:.1f}">{escape(candidate.label)}</text></a>'
    )


def _table(search: SearchOut) -> str:
    head = "<tr><th>candidate</th><th>state</th><th>p50 ms</th><th>size</th><th>quality</th><th>front</th></tr>"
    body = []
    for c in search.candidates:
        p = c.point
        chosen = " <b>(chosen)</b>" if c.job_id == search.chosen_job_id else ""
        body.append(
            f'<tr><td><a href="{escape(c.report_url)}">{escape(c.label)}</a>{chosen}<div class="note">'
            f"{escape(c.note or c.reason)}</div></td><td>{escape(c.state)}</td>"
            f"<td>{_num(p.p50_ms if p else None, 4)}</td><td>{p.size_bytes if p else '–'}</td>"
            f"<td>{_num(p.quality if p else None, 4)}</td><td>{'yes' if c.on_front else ''}</td></tr>"
        )
    return f"<table>{head}{''.join(body)}</table>"


def render_search(search: SearchOut) -> str:
    legend = (
        f'<div class="legend"><span><i style="background:{FRONT}"></i>on the front</span>'
        f'<span><i style="background:{OTHER}"></i>dominated</span>'
        f'<span><i style="background:{INFEASIBLE}"></i>misses a constraint</span>'
        f'<span><i style="background:{LINE}"></i>constraint</span></div>'
    )
    notes = "".join(f"<li>{escape(n)}</li>" for n in search.notes)
    body = (
        f"<h1>Search {escape(search.id)}</h1><p class='sub'>{escape(search.status)} · objective "
        f"{escape(search.objective)} · {search.progress.done}/{search.progress.total} done, "
        f"{search.progress.running} running, {search.progress.pruned} pruned, {search.progress.cut} cut</p>"
        f"<p>{escape(search.verdict or 'running')}</p>"
        f'<div class="card"><h3>Pareto front</h3>{pareto_chart(search)}{legend}</div>'
        f"<h2>Candidates</h2>{_table(search)}" + (f"<h2>Left out</h2><ul>{notes}</ul>" if notes else "")
    )
    return _page(f"Search {search.id}", body)

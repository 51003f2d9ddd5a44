"""Points of a search in objective space, the Pareto front over (quality up, latency down, size down), and
the choice: the best on the objective among the points that met every constraint, never merely the first."""

from typing import Any

from app.schemas.searches import Objective, Point


def point_of(job_id: str, label: str, report: dict[str, Any]) -> Point | None:
    """A succeeded candidate's point, read from its report; None when the report lacks latency or quality."""
    result = report.get("result") or {}
    latency = result.get("latency") or []
    accuracy = (report.get("accuracy") or {}).get("result") or {}
    cosine = (result.get("fidelity") or {}).get("cosine_mean")
    quality, metric = (accuracy["top1"], "top1") if "top1" in accuracy else (cosine, "cosine")
    if not latency or quality is None or result.get("size_bytes") is None:
        return None
    verdict = (report.get("constraints") or {}).get("verdict")
    return Point(
        job_id=job_id,
        label=label,
        quality=float(quality),
        quality_metric=metric,
        p50_ms=float(latency[0]["p50_ms"]),
        size_bytes=int(result["size_bytes"]),
        feasible=verdict in ("pass", "warn"),
    )


def dominates(a: Point, b: Point) -> bool:
    """`a` is at least as good as `b` on quality, latency and size, and better on one."""
    at_least = a.quality >= b.quality and a.p50_ms <= b.p50_ms and a.size_bytes <= b.size_bytes
    better = a.quality > b.quality or a.p50_ms < b.p50_ms or a.size_bytes < b.size_bytes
    return at_least and better


def front(points: list[Point]) -> list[Point]:
    """The points no other point dominates, fastest first."""
    kept = [p for p in points if not any(dominates(q, p) for q in points if q is not p)]
    return sorted(kept, key=lambda p: (p.p50_ms, p.size_bytes, -p.quality))


def _rank(objective: Objective, p: Point) -> tuple[float, float, float]:
    if objective == "latency":
        return (p.p50_ms, p.size_bytes, -p.quality)
    if objective == "size":
        return (p.size_bytes, p.p50_ms, -p.quality)
    return (-p.quality, p.p50_ms, p.size_bytes)


def best(points: list[Point], objective: Objective) -> Point | None:
    """The feasible point best on `objective` (ties broken by the other two); None when none is feasible."""
    feasible = [p for p in points if p.feasible]
    return min(feasible, key=lambda p: _rank(objective, p)) if feasible else None

"""The Pareto front and the choice, on synthetic points: the front is exactly the non-dominated set, and the
chosen point is the best feasible one on the objective, not the first."""

import random

from app.schemas.searches import Point
from app.services import pareto


def point(name: str, quality: float, p50: float, size: int, feasible: bool = True) -> Point:
    return Point(
        job_id=name, label=name, quality=quality, quality_metric="top1", p50_ms=p50, size_bytes=size, feasible=feasible
    )


def test_front_on_random_points_is_non_dominated_and_complete() -> None:
    rng = random.Random(7)
    points = [point(f"p{i}", rng.random(), rng.uniform(1, 10), rng.randint(1, 100)) for i in range(200)]
    front = pareto.front(points)
    names = {p.job_id for p in front}
    for p in front:
        assert not any(pareto.dominates(q, p) for q in points), f"{p.job_id} is on the front but dominated"
    for p in points:
        if p.job_id not in names:
            assert any(pareto.dominates(q, p) for q in front), f"{p.job_id} is left off but nothing dominates it"


def test_dominance_needs_one_strictly_better_figure() -> None:
    a, twin = point("a", 0.9, 2.0, 10), point("twin", 0.9, 2.0, 10)
    assert not pareto.dominates(a, twin), "an equal point must not dominate its twin"
    assert pareto.dominates(point("b", 0.9, 1.0, 10), a), "faster at the same quality and size dominates"
    assert not pareto.dominates(point("c", 0.8, 1.0, 5), a), "faster and smaller but less accurate is a trade-off"
    assert {p.job_id for p in pareto.front([a, twin])} == {"a", "twin"}, "equal points are both on the front"


def test_best_is_the_fastest_feasible_not_the_first() -> None:
    points = [
        point("first-feasible", 0.97, 5.0, 50),
        point("fastest-infeasible", 0.90, 1.0, 20, feasible=False),
        point("fastest-feasible", 0.96, 2.0, 60),
    ]
    chosen = pareto.best(points, "latency")
    assert chosen is not None and chosen.job_id == "fastest-feasible", chosen
    size = pareto.best(points, "size")
    assert size is not None and size.job_id == "first-feasible", size
    accuracy = pareto.best(points, "accuracy")
    assert accuracy is not None and accuracy.job_id == "first-feasible", accuracy


def test_best_is_none_when_nothing_is_feasible() -> None:
    assert pareto.best([point("x", 0.5, 1.0, 1, feasible=False)], "latency") is None


def test_point_reads_accuracy_latency_size_and_verdict_from_a_report() -> None:
    report = {
        "result": {"latency": [{"p50_ms": 1.5}], "size_bytes": 1234, "fidelity": {"cosine_mean": 0.99}},
        "accuracy": {"result": {"top1": 0.95}},
        "constraints": {"verdict": "warn"},
    }
    p = pareto.point_of("job_1", "int8", report)
    assert p == point("job_1", 0.95, 1.5, 1234).model_copy(update={"label": "int8"}), p
    no_labels = {**report, "accuracy": None, "constraints": {"verdict": "fail"}}
    q = pareto.point_of("job_2", "fp16", no_labels)
    assert q is not None and (q.quality_metric, q.quality, q.feasible) == ("cosine", 0.99, False), q

"""The report page renders from the report JSON alone (no torch on the API side): with labels it charts
top-1 accuracy and shows the drop's interval; every value a user supplied is escaped."""

import re
from typing import Any

import numpy as np

from app.schemas.reports import Report
from app.services.report_page import render_report
from workers.evaluation.metrics import accuracy_report


def latency(p50: float) -> list[dict[str, Any]]:
    return [
        {
            "batch_size": b,
            "runtime": "onnxruntime",
            "device": "cpu",
            "runs": 20,
            "p50_ms": p50 * b,
            "p90_ms": p50 * b * 1.1,
            "p99_ms": p50 * b * 1.3,
            "mean_ms": p50 * b * 1.05,
        }
        for b in (1, 16)
    ]


def report(accuracy: dict[str, Any] | None) -> Report:
    fid = {
        "output": "logits",
        "cosine_mean": 0.998,
        "cosine_min": 0.99,
        "sqnr_db": 31.2,
        "top1_agreement": 0.97,
        "max_abs_error": 0.1,
        "outputs": {},
    }
    return Report.model_validate(
        {
            "job_id": "job_1",
            "model_id": "mdl_<script>",
            "spec": {"passes": [{"type": "quantize"}], "device": "cpu"},
            "original": {
                "format": "onnx",
                "size_bytes": 4_000_000,
                "param_count": 1_000_000,
                "latency": latency(2.0),
            },
            "result": {
                "format": "onnx",
                "size_bytes": 1_000_000,
                "param_count": 1_000_000,
                "size_ratio": 4.0,
                "fidelity": fid,
                "latency": latency(1.0),
            },
            "steps": [{"index": 0, "type": "quantize", "fidelity": fid}],
            "accuracy": accuracy,
            "constraints": {
                "verdict": "fail",
                "reason": "max_accuracy_drop: 0.03 against a limit of 0.01",
                "checks": {"max_accuracy_drop": {"limit": 0.01, "value": 0.03, "met": False}},
            },
        }
    )


def test_labelled_report_charts_accuracy_with_its_interval() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 10, 300)
    original = np.eye(10)[labels] + 0.3 * rng.standard_normal((300, 10))
    result = original + 0.4 * rng.standard_normal((300, 10))
    acc = accuracy_report(original, result, labels, "logits")
    html = render_report(report(acc))
    assert "top-1 accuracy" in html and "95% CI" in html
    low, high = acc["drop_ci95"]["low"], acc["drop_ci95"]["high"]
    assert f"[{low:+.4f}, {high:+.4f}]" in html, "the interval is printed as computed"
    assert len(re.findall(r'class="chart"', html)) == 4 and len(re.findall(r'class="point"', html)) == 2
    assert 'class="verdict fail"' in html and "max_accuracy_drop" in html
    assert "95% interval, from the paired bootstrap" in html, "the accuracy chart draws the interval as a whisker"


def test_values_are_escaped_and_nothing_loads_from_elsewhere() -> None:
    html = render_report(report(None))
    assert "mdl_&lt;script&gt;" in html and "<script" not in html
    assert not re.search(r"\bsrc=|<link|@import|url\(", html)
    assert "cosine to original" in html, "without labels, quality is fidelity to the original"


def test_nodes_kept_in_float_are_listed_with_each_attempt() -> None:
    held = report(None).model_dump(mode="json")
    held["steps"][0]["sensitivity"] = {
        "floor": 0.98,
        "floor_source": "setting FIDELITY_FLOOR_INT8",
        "budget": 4,
        "before": 0.498,
        "after": 0.99993,
        "met": True,
        "chosen_attempt": 1,
        "kept_in_float": [
            {"node": "head<b>", "op_type": "Gemm", "reason": "sensitivity", "detail": "adds relative error 0.631"}
        ],
        "attempts": [
            {"attempt": 0, "nodes_in_float": [], "cosine_mean": 0.498, "met": False},
            {"attempt": 1, "nodes_in_float": ["head<b>"], "cosine_mean": 0.99993, "met": True},
        ],
    }
    html = render_report(Report.model_validate(held))
    assert "<h2>Kept in float</h2>" in html and "head&lt;b&gt;" in html, "the node is named, escaped"
    assert "adds relative error 0.631" in html and "0.498" in html and "0.99993" in html, "why, before and after"
    assert "Kept in float" not in render_report(report(None)), "no section for a step not held to a floor"


def test_each_latency_row_names_its_runtime_and_version() -> None:
    held = report(None).model_dump(mode="json")
    held["result"]["latency"] = [{**row, "runtime": "openvino", "runtime_version": "2026.4.1"} for row in latency(1.0)]
    html = render_report(Report.model_validate(held))
    assert "<td>openvino 2026.4.1 / cpu</td>" in html, "the result's rows say OpenVINO timed them, and which"
    assert "<td>onnxruntime / cpu</td>" in html, "a row from an older report, without a version, still shows"

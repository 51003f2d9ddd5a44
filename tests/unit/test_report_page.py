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


def test_a_language_model_shows_perplexity_and_samples_side_by_side() -> None:
    speed = {"prompt_length": 32, "batch_size": 1, "new_tokens": 20, "kv_cache": True, "runtime": "onnxruntime"}
    side = {
        "weight_memory_bytes": 10_000_000,
        "perplexity": {
            "perplexity": 1.85,
            "ci95": {"low": 1.8, "high": 1.9},
            "documents": 48,
            "tokens": 3000,
            "method": "bootstrap",
        },
        "generation": {**speed, "time_to_first_token_ms": 4.0, "decode_tokens_per_s": 480.0},
    }
    page = report(None).model_dump()
    page["causal_lm"] = {
        "original": side,
        "result": {**side, "weight_memory_bytes": 1_700_000},
        "perplexity_change": {"relative": 0.0018, "ci95": {"low": 0.0004, "high": 0.0033}},
        "greedy_agreement": {"identical": 5, "prompts": 8, "first_tokens": 20},
        "samples": [
            {"prompt": "Anna <went>", "original": " home.", "result": " away.", "identical_first_tokens": False}
        ],
    }
    html = render_report(Report.model_validate(page))
    assert "Language model" in html and "perplexity change +0.18%" in html
    assert "Anna &lt;went&gt;" in html and " away." in html, "the prompt (escaped) and both continuations"
    assert "identical on 5/8 prompts" in html


def test_each_latency_row_names_its_runtime_and_version() -> None:
    held = report(None).model_dump(mode="json")
    held["result"]["latency"] = [{**row, "runtime": "openvino", "runtime_version": "2026.4.1"} for row in latency(1.0)]
    html = render_report(Report.model_validate(held))
    assert "<td>openvino 2026.4.1 / cpu</td>" in html, "the result's rows say OpenVINO timed them, and which"
    assert "<td>onnxruntime / cpu</td>" in html, "a row from an older report, without a version, still shows"


def test_compiled_rows_and_the_aoti_package_are_listed_with_how_to_load_each() -> None:
    held = report(None).model_dump(mode="json")
    held["spec"]["device"] = "cuda"
    cuda = [{**row, "runtime": "torch", "device": "cuda"} for row in latency(1.0)]
    held["result"] |= {
        "format": "pt2",
        "how_to_load": "torch.export.load('model.pt2').module()",
        "latency_compiled": [{**row, "compiled": "torch.compile"} for row in cuda],
        "aoti": {
            "device": "cuda",
            "how_to_load": "torch._inductor.aoti_load_package('model.aoti.pt2')",
            "latency": [{**row, "compiled": "aotinductor", "p50_ms": 0.25} for row in cuda],
        },
    }
    html = render_report(Report.model_validate(held))
    assert html.count("<td>result, torch.compile</td>") == 2 and "<td>result, AOTInductor package</td>" in html
    assert "<td>0.25</td>" in html, "the package's own p50"
    assert "torch.export.load(&#x27;model.pt2&#x27;)" in html and "aoti_load_package" in html
    held["result"]["aoti"] = {"device": "cuda", "error": "RuntimeError: run_func_ failed"}
    html = render_report(Report.model_validate(held))
    assert "No AOTInductor package: RuntimeError: run_func_ failed" in html and "AOTInductor package</td>" not in html

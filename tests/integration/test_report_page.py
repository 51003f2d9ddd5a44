"""The report through the real API and worker: its JSON schema in the OpenAPI, the figures it promises,
the self-contained HTML page drawn in a real headless Chromium (no console errors, charts in the DOM,
a screenshot kept under test-artifacts/), and two jobs compared side by side."""

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By

from tests.conftest import ROOT, Stack, upload

ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
MLP_MACS = 64 * 256 + 256 * 10


@pytest.fixture(scope="module")
def jobs(stack: Stack, mlp_onnx: Path) -> dict[str, Any]:
    """Two finished jobs on the same MLP: dynamic int8 with constraints, and a graph optimisation only."""
    with stack.client() as client:
        model = upload(client, mlp_onnx)
        common = {
            "model_id": model["id"],
            "input_shapes": {"x": [4, 64]},
            "evaluate": {"latency": {"batch_sizes": [1, 8], "runs": 30, "warmup": 3}},
        }
        int8 = client.post(
            "/v1/jobs",
            json={
                **common,
                "passes": [{"type": "quantize", "method": "dynamic"}],
                "constraints": {"min_size_ratio": 2.0, "max_latency_ms": 1000},
            },
        )
        plain = client.post("/v1/jobs", json={**common, "passes": [{"type": "optimize"}]})
        assert int8.status_code == 202 and plain.status_code == 202, (int8.text, plain.text)
        done = [stack.wait_for(client, r.json()["id"]) for r in (int8, plain)]
        assert all(j["status"] == "succeeded" for j in done), [j["error"] for j in done]
        return {"model": model, "int8": done[0]["id"], "optimized": done[1]["id"]}


def chromium(profile: Path, *flags: str) -> webdriver.Chrome:
    """Debian's headless chromium through its chromedriver (`make test` installs both when missing)."""
    assert CHROMIUM.exists() and CHROMEDRIVER.exists(), (
        "the report page is tested in Debian's chromium: apt-get install -y chromium chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--no-first-run",
        "--disable-component-update",
        "--disable-sync",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        *flags,
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    driver = chromium(tmp_path_factory.mktemp("chromium-profile"))
    yield driver
    driver.quit()


def open_offline(browser: webdriver.Chrome, html: str, name: str) -> list[dict[str, Any]]:
    """Save the page as a file and open it from disk (what a person does with a downloaded report); returns
    the console's errors and keeps a full-page screenshot."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / f"{name}.html"
    path.write_text(html, encoding="utf-8")
    browser.get_log("browser")
    browser.set_window_size(1200, 900)
    browser.get(path.as_uri())
    height = browser.execute_script("return document.documentElement.scrollHeight")
    browser.set_window_size(1200, int(height) + 40)
    browser.save_screenshot(str(ARTIFACTS / f"{name}.png"))
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_report_json_holds_every_promised_figure(client: httpx.Client, jobs: dict[str, Any]) -> None:
    report = client.get(f"/v1/jobs/{jobs['int8']}/report").json()
    original, result = report["original"], report["result"]
    for figures in (original, result):
        assert figures["macs_per_sample"] == MLP_MACS, "MACs per sample from the ONNX graph"
        assert figures["flops_per_sample"] > 2 * MLP_MACS and figures["sparsity"] is not None
        assert [r["batch_size"] for r in figures["latency"]] == [1, 8], "every batch size asked"
        for row in figures["latency"]:
            assert row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] and row["throughput_per_s"] > 0
            assert row["warmup"] == 3 and row["runs"] == 30 and row["threads"] >= 1
            assert row["peak_memory_bytes"] > 0 and row["memory_kind"].startswith("rss_high_water")
    assert result["fidelity"]["sqnr_db"] > 10, "int8 keeps the MLP's outputs well above the noise"
    verdict = report["constraints"]
    assert verdict["verdict"] in ("pass", "warn"), "met; a warning only says it is slower or larger"
    assert set(verdict["checks"]) == {"min_size_ratio", "max_latency_ms", "fidelity_floor"}
    assert [c["batch_size"] for c in result["latency_comparison"]] == [1, 8], "a speedup with interval per batch"
    repro = report["reproducibility"]
    artifact = next(a for a in client.get(f"/v1/jobs/{jobs['int8']}/artifacts").json() if a["kind"] == "model")
    assert repro["input_sha256"] == jobs["model"]["sha256"] and repro["output_sha256"] == artifact["sha256"]
    assert repro["seeds"]["evaluation_inputs"] == report["spec"]["seed"]
    assert {"python", "torch", "onnx", "onnxruntime", "numpy", "transformers"} <= set(report["versions"])
    assert report["machine"]["cpu"] and report["machine"]["cores"] >= 1
    assert any("onnxruntime" in note for note in report["evaluation"]["latency"]["notes"])


def test_report_schema_is_in_the_openapi(client: httpx.Client) -> None:
    spec = client.get("/openapi.json").json()
    ok = spec["paths"]["/v1/jobs/{job_id}/report"]["get"]["responses"]["200"]["content"]["application/json"]
    assert ok["schema"]["$ref"].endswith("/Report")
    assert {"original", "result", "constraints", "accuracy", "reproducibility"} <= set(
        spec["components"]["schemas"]["Report"]["properties"]
    )
    assert "/v1/jobs/{job_id}/report.html" in spec["paths"] and "/v1/jobs/{job_id}/compare" in spec["paths"]


def test_report_page_draws_its_charts_offline(
    client: httpx.Client, jobs: dict[str, Any], browser: webdriver.Chrome
) -> None:
    response = client.get(f"/v1/jobs/{jobs['int8']}/report.html")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/html")
    html = response.text
    assert not re.search(r"<script|<link|<img|\bsrc=|@import|url\(", html), "nothing loads from elsewhere"
    errors = open_offline(browser, html, "report")
    assert errors == [], f"console errors: {errors}"
    charts = browser.find_elements(By.CSS_SELECTOR, "svg.chart")
    assert len(charts) == 4, "size, latency per batch size, quality, quality against latency"
    bars = browser.find_elements(By.CSS_SELECTOR, "svg.chart path.bar")
    assert len(bars) == 2 + 2 * 2 + 2, "size x2, latency 2 batch sizes x2, cosine x2"
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart circle.point")) == 2
    assert all(bar.size["height"] > 0 for bar in bars), "every bar is drawn with a height"
    assert browser.find_element(By.CSS_SELECTOR, ".verdict").text in ("PASS", "WARN")


def test_two_jobs_side_by_side(client: httpx.Client, jobs: dict[str, Any], browser: webdriver.Chrome) -> None:
    comparison = client.get(f"/v1/jobs/{jobs['int8']}/compare", params={"with": jobs["optimized"]})
    assert comparison.status_code == 200, comparison.text
    body = comparison.json()
    assert body["base"]["job_id"] == jobs["int8"] and body["other"]["job_id"] == jobs["optimized"]
    assert body["same_model"] and body["same_machine"]
    assert body["size_ratio"] == pytest.approx(body["base"]["size_bytes"] / body["other"]["size_bytes"])
    assert body["size_ratio"] < 1, "int8 is smaller than the float model"
    assert [(p["batch_size"], p["device"]) for p in body["latency"]] == [(1, "cpu"), (8, "cpu")], "paired rows"
    assert body["latency_ratio"] == body["latency"][0]["ratio"], "the headline ratio is batch 1 against batch 1"
    page = client.get(f"/v1/jobs/{jobs['int8']}/compare.html", params={"with": jobs["optimized"]})
    assert page.status_code == 200
    assert open_offline(browser, page.text, "compare") == []
    assert len(browser.find_elements(By.CSS_SELECTOR, "svg.chart circle.point")) == 3, "original, A and B"
    missing = client.get(f"/v1/jobs/{jobs['int8']}/compare", params={"with": "job_missing"})
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get(f"/v1/jobs/{jobs['int8']}/compare").json()["code"] == "validation_error"

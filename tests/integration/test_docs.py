"""/docs in a real headless Chromium that can reach nothing but the service: Swagger UI renders from the
assets installed with the API, with no unresolved reference, and POST /v1/jobs shows the pass configs."""

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from selenium import webdriver
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

from tests.conftest import Stack
from tests.integration.test_report_page import ARTIFACTS, chromium


@pytest.fixture(scope="module")
def offline_browser(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[webdriver.Chrome]:
    """Every host name but the service's fails to resolve: what a machine without internet sees."""
    host = urlsplit(stack.url).hostname
    driver = chromium(tmp_path_factory.mktemp("docs-profile"), f"--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE {host}")
    yield driver
    driver.quit()


def test_docs_render_offline_with_the_pass_configs(stack: Stack, offline_browser: webdriver.Chrome) -> None:
    browser = offline_browser
    browser.set_window_size(1280, 2000)
    browser.get(f"{stack.url}/docs#/jobs/submit_job_v1_jobs_post")
    wait = WebDriverWait(browser, 60)
    operation = wait.until(
        expected_conditions.presence_of_element_located((By.ID, "operations-jobs-submit_job_v1_jobs_post"))
    )
    wait.until(lambda _: "example" in operation.text.lower() or "schema" in operation.text.lower())
    ARTIFACTS.mkdir(exist_ok=True)
    browser.save_screenshot(str(ARTIFACTS / "docs.png"))
    loaded = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert loaded and all(url.startswith(stack.url) for url in loaded), f"fetched from elsewhere: {loaded}"
    page = browser.find_element(By.TAG_NAME, "body").text
    assert "Could not resolve reference" not in page
    example = operation.find_element(By.CSS_SELECTOR, ".body-param__example, .microlight, pre").text
    assert '"type": "convert"' in example, f"the spec's passes show a pass config, not strings: {example[:400]}"
    assert '"type": "quantize"' in example and '"method": "dynamic"' in example, "every pass, with its fields"
    models = browser.find_element(By.CSS_SELECTOR, "section.models").text
    for name in ("Static", "Int4", "Structured", "Tucker", "Convert", "EvaluateSpec"):  # a method, a type
        assert name in models, f"{name} missing from the Schemas section"


def test_redoc_is_served_from_the_service(stack: Stack, offline_browser: webdriver.Chrome) -> None:
    offline_browser.get(f"{stack.url}/redoc")
    WebDriverWait(offline_browser, 60).until(lambda b: "POST" in b.find_element(By.TAG_NAME, "body").text)
    loaded = offline_browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    # The bundle's "powered by Redocly" footer image points at their CDN; offline it simply does not show.
    needed = [url for url in loaded if not url.endswith("/redoc/logo-mini.svg")]
    assert all(url.startswith(stack.url) for url in needed), f"fetched from elsewhere: {needed}"
    assert f"{stack.url}/openapi.json" in needed

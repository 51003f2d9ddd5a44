"""PRESIGNED_DOWNLOADS: an API process that answers artifact downloads with a 307 to a short-lived S3 URL
(the client then fetches, and ranges, from the bucket itself); on a local folder there is no URL to give,
so the same setting keeps streaming through the API."""

import hashlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import BACKEND, Stack, start_api_process, upload


@pytest.fixture(scope="module")
def presigning(stack: Stack) -> Iterator[str]:
    env = {**os.environ, **stack.env, "PRESIGNED_DOWNLOADS": "true", "PRESIGNED_TTL_S": "60"}
    api, url = start_api_process(env, stack.home / "logs" / f"presign-{uuid.uuid4().hex[:4]}.log")
    yield url
    api.terminate()
    api.wait(timeout=30)


def test_downloads_redirect_to_a_presigned_url_on_s3_and_stream_from_a_folder(
    stack: Stack, presigning: str, mlp_onnx: Path
) -> None:
    with stack.client() as client:
        model = upload(client, mlp_onnx)
        spec = {"model_id": model["id"], "passes": [{"type": "optimize"}], "input_shapes": {"x": [2, 64]}}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = response.json()
        assert stack.wait_for(client, job["id"])["status"] == "succeeded"
        artifact = next(a for a in client.get(f"/v1/jobs/{job['id']}/artifacts").json() if a["kind"] == "model")
    with httpx.Client(base_url=presigning, timeout=60, headers=dict(client.headers)) as api:
        answer = api.get(artifact["download_url"])
    if BACKEND == "postgres-redis-s3":
        assert answer.status_code == 307, answer.text
        assert answer.headers["x-checksum-sha256"] == artifact["sha256"]
        location = answer.headers["location"]
        assert "X-Amz-Expires=60" in location, "the URL lives PRESIGNED_TTL_S seconds"
        whole = httpx.get(location, timeout=60)  # no API key: the signature is the authorisation
        assert whole.status_code == 200 and hashlib.sha256(whole.content).hexdigest() == artifact["sha256"]
        assert f'filename="{artifact["name"]}"' in whole.headers["content-disposition"]
        part = httpx.get(location, headers={"Range": "bytes=10-19"}, timeout=60)
        assert part.status_code == 206 and part.content == whole.content[10:20], "ranges work on the bucket"
    else:
        assert answer.status_code == 200, "a local folder cannot presign: the API streams the artifact"
        assert hashlib.sha256(answer.content).hexdigest() == artifact["sha256"]

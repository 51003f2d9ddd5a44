"""Uploads through the real API process into the real database and store."""

import hashlib
import io
import pickle
import uuid
import zipfile
from pathlib import Path

import httpx
import onnx

from tests.conftest import Stack, upload


def test_onnx_upload_reports_signature_hash_and_size(client: httpx.Client, mlp_onnx: Path) -> None:
    model = upload(client, mlp_onnx)
    assert model["id"].startswith("mdl_")
    assert model["format"] == "onnx"
    assert model["sha256"] == hashlib.sha256(mlp_onnx.read_bytes()).hexdigest(), "sha256 must match the bytes sent"
    assert model["size_bytes"] == mlp_onnx.stat().st_size
    assert model["inputs"][0]["name"] == "x" and model["inputs"][0]["shape"][1] == 64
    assert model["param_count"] == 64 * 256 + 256 + 256 * 10 + 10, "parameter count of the MLP"
    assert client.get(f"/v1/models/{model['id']}").json()["sha256"] == model["sha256"]


def test_hugging_face_folder_zip_is_detected(client: httpx.Client, minilm_zip: Path) -> None:
    model = upload(client, minilm_zip)
    assert model["format"] == "hf_folder"
    assert [i["name"] for i in model["inputs"]] == ["input_ids", "token_type_ids", "attention_mask"]
    assert model["param_count"] == 22_713_728, "all-MiniLM-L6-v2 has 22.7M weights in its safetensors"


class _Canary:
    """Unpickling this creates the canary file: proof that something executed the upload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


def test_pickle_upload_is_refused_and_never_loaded(client: httpx.Client, tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    payload = pickle.dumps(_Canary(str(canary)))
    for name, body in [("model.pt", payload), ("pytorch_model.bin", payload)]:
        response = client.post("/v1/models", files={"file": (name, body)})
        assert response.status_code == 422, response.text
        problem = response.json()
        assert response.headers["content-type"].startswith("application/problem+json")
        assert problem["code"] == "unsafe_model_format"
        assert "ONNX" in problem["detail"] and "safetensors" in problem["detail"], "the error lists safe formats"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:  # the layout torch.save writes: a zipped pickle
        zf.writestr("model/data.pkl", payload)
        zf.writestr("model/version", "3")
    response = client.post("/v1/models", files={"file": ("model.pth", buf.getvalue())})
    assert response.status_code == 422 and response.json()["code"] == "unsafe_model_format"
    assert not canary.exists(), "the pickle was executed"


def test_garbage_and_empty_uploads_get_clear_errors(client: httpx.Client) -> None:
    response = client.post("/v1/models", files={"file": ("model.onnx", b"\x01\x02 not a model at all")})
    assert response.status_code == 422 and response.json()["code"] == "unsupported_model_format"
    response = client.post("/v1/models", files={"file": ("model.onnx", b"")})
    assert response.status_code == 422 and response.json()["code"] == "validation_error"
    response = client.post("/v1/models", files={"other": ("model.onnx", b"abc")})
    assert response.status_code == 422 and "'file'" in response.json()["detail"]


def test_list_paginates_and_delete_removes(client: httpx.Client, mlp_onnx: Path, stack: Stack) -> None:
    ids = [upload(client, mlp_onnx)["id"] for _ in range(3)]
    first = client.get("/v1/models", params={"limit": 2}).json()
    assert len(first["items"]) == 2 and first["next_cursor"]
    second = client.get("/v1/models", params={"limit": 2, "cursor": first["next_cursor"]}).json()
    seen = [m["id"] for m in first["items"] + second["items"]]
    assert ids[-1] == seen[0] and len(set(seen)) == len(seen), "newest first, no repeats across pages"
    assert client.delete(f"/v1/models/{ids[0]}").status_code == 204
    gone = client.get(f"/v1/models/{ids[0]}")
    assert gone.status_code == 404 and gone.json()["code"] == "not_found"
    assert stack.store().list_keys(f"models/{ids[0]}/") == [], "the stored file is deleted too"


def test_deleting_a_models_last_copy_deletes_its_cached_original_figures(
    client: httpx.Client, mlp_onnx: Path, stack: Stack, tmp_path: Path
) -> None:
    model = onnx.load(mlp_onnx)
    model.metadata_props.add(key="copy", value=uuid.uuid4().hex)  # bytes of its own: no other test's model
    path = tmp_path / "own.onnx"
    onnx.save(model, path)
    first, twin = upload(client, path), upload(client, path)
    spec = {"model_id": first["id"], "passes": [{"type": "optimize"}], "input_shapes": {"x": [4, 64]}}
    job = client.post("/v1/jobs", json={**spec, "evaluate": {"latency": {"runs": 3, "warmup": 0}}})
    assert job.status_code == 202, job.text
    assert stack.wait_for(client, job.json()["id"])["status"] == "succeeded"

    def cached() -> list[str]:
        return [k for k in stack.store().list_keys("cache/original/") if f"/{first['sha256']}/" in k]

    assert cached(), "the job kept the original's figures (and its outputs on the evaluation inputs)"
    assert client.delete(f"/v1/models/{first['id']}").status_code == 204
    assert cached(), "a model of the tenant with the same bytes still uses them"
    assert client.delete(f"/v1/models/{twin['id']}").status_code == 204
    assert cached() == [], "deleted with the last copy: nothing measured on the model outlives it"


def test_health_readiness_and_openapi(client: httpx.Client) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz").json()
    assert ready["checks"] == {"database": "ok", "broker": "ok", "store": "ok"}
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/v1/models", "/v1/jobs", "/v1/jobs/{job_id}/cancel", "/v1/artifacts/{artifact_id}/content"} <= set(paths)
    assert client.get("/nope").json()["code"] == "not_found"


def test_the_backend_under_test_is_the_one_asked_for(stack: Stack, client: httpx.Client, mlp_onnx: Path) -> None:
    """Guards the CI matrix: the postgres-redis runs must really write to PostgreSQL and publish to Redis, and
    the -s3 run must really store in the bucket."""
    from sqlalchemy import create_engine, text

    from tests.conftest import BACKEND

    model = upload(client, mlp_onnx)
    engine = create_engine(stack.database_url)
    with engine.connect() as conn:
        found = conn.execute(text("SELECT count(*) FROM models WHERE id = :id"), {"id": model["id"]}).scalar()
    engine.dispose()
    assert found == 1
    on_services = BACKEND.startswith("postgres-redis")
    assert stack.database_url.startswith("postgresql" if on_services else "sqlite")
    assert stack.env.get("BROKER_URL", "filesystem://").startswith("redis" if on_services else "filesystem")
    expected_store = "S3Store" if BACKEND == "postgres-redis-s3" else "LocalStore"
    assert type(stack.store()).__name__ == expected_store, f"the {BACKEND} run stores in the wrong place"
    assert stack.store().list_keys(f"models/{model['id']}/") == [f"models/{model['id']}/upload"]

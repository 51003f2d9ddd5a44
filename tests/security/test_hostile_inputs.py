"""The hostile-input battery: every file is refused (4xx) or fails its job cleanly, no canary appears,
nothing leaks, and the worker stays alive and runs the next job."""

import hashlib
import io
import os
import pickle
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import Stack, upload
from tests.security.conftest import tiny_onnx

TENANT = "hostile"
SECRET_TEXT = b"top secret: must never reach an artifact"


class _Canary:
    """Unpickling this creates the canary file: proof that something executed the upload."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (open, (self.path, "w"))


@pytest.fixture(scope="module")
def canary(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    path = tmp_path_factory.mktemp("canary") / "executed"
    yield path
    assert not path.exists(), "a hostile upload executed code"


@pytest.fixture(scope="module")
def hostile(stack: Stack) -> Iterator[httpx.Client]:
    with stack.client(TENANT) as client:
        yield client


def _zip(
    entries: dict[str, bytes], links: dict[str, str] | None = None, compression: int = zipfile.ZIP_STORED
) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            info = zipfile.ZipInfo(name)
            info.compress_type = compression
            zf.writestr(info, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, target)
    return buf.getvalue()


def _cases(canary: Path, secret: Path) -> list[tuple[str, str, bytes, set[str]]]:
    payload = pickle.dumps(_Canary(str(canary)))
    weights = b"\0" * 16
    return [
        ("pickle .pt", "model.pt", payload, {"unsafe_model_format"}),
        ("pickle .bin", "pytorch_model.bin", payload, {"unsafe_model_format"}),
        (
            "pickle in a zipped folder",
            "model.zip",
            _zip({"m/config.json": b"{}", "m/pytorch_model.bin": payload}),
            {"unsafe_model_format"},
        ),
        ("torch.save zip", "model.pth", _zip({"m/data.pkl": payload, "m/version": b"3"}), {"unsafe_model_format"}),
        ("onnx that is a pickle", "model.onnx", payload, {"unsafe_model_format"}),
        (
            "external ../../secret",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx("../../secret"), "m/w.bin": weights}),
            {"unsupported_model_format"},
        ),
        (
            "external sub/../../secret",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx("sub/../../secret"), "m/sub/w.bin": weights}),
            {"unsupported_model_format"},
        ),
        (
            "external absolute",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx(str(secret)), "m/w.bin": weights}),
            {"unsupported_model_format"},
        ),
        (
            "external symlink",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx("w.bin")}, {"m/w.bin": str(secret)}),
            {"unsupported_model_format"},
        ),
        (
            "zip with ../ entry",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx(), "../../evil.txt": b"x"}),
            {"unsupported_model_format"},
        ),
        (
            "zip with a symlink entry",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx()}, {"m/passwd": "/etc/passwd"}),
            {"unsupported_model_format"},
        ),
        (
            "zip bomb",
            "m.zip",
            _zip({"m/model.onnx": tiny_onnx(), "m/w.bin": b"\0" * (64 << 20)}, compression=zipfile.ZIP_DEFLATED),
            {"unsupported_model_format"},
        ),
        ("truncated protobuf", "model.onnx", tiny_onnx()[:-7], {"unsupported_model_format"}),
        ("huge Constant", "model.onnx", tiny_onnx(constant_dims=[1 << 20, 1 << 20]), {"model_limits_exceeded"}),
        ("zip named .onnx", "model.onnx", _zip({"m/model.onnx": tiny_onnx()}), {"format_mismatch"}),
    ]


def test_hostile_uploads_are_refused(hostile: httpx.Client, canary: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET_TEXT)
    before = len(hostile.get("/v1/models", params={"limit": 200}).json()["items"])
    for label, name, body, codes in _cases(canary, secret):
        response = hostile.post("/v1/models", files={"file": (name, body)})
        assert 400 <= response.status_code < 500, f"{label}: {response.status_code} {response.text[:300]}"
        assert response.headers["content-type"].startswith("application/problem+json"), label
        assert response.json()["code"] in codes, f"{label}: {response.json()}"
        assert not canary.exists(), f"{label} executed code"
    assert len(hostile.get("/v1/models", params={"limit": 200}).json()["items"]) == before, "nothing was kept"


def test_hostile_filenames_become_plain_display_names(hostile: httpx.Client, stack: Stack, mlp_onnx: Path) -> None:
    names = [(raw, True) for raw in ("../../../../tmp/pwned.onnx", "a\x00b.onnx", "x" * 10_000 + ".onnx")]
    names.append(("../../../../tmp/pwned.onnx\x00.txt", False))  # a raw body: ?filename= carries a real NUL
    for raw, multipart in names:
        if multipart:
            model = upload(hostile, mlp_onnx, raw)
        else:
            response = hostile.post(
                "/v1/models",
                params={"filename": raw},
                content=mlp_onnx.read_bytes(),
                headers={"content-type": "application/octet-stream"},
            )
            assert response.status_code == 201, response.text
            model = response.json()
        assert "/" not in model["filename"] and "\x00" not in model["filename"], model["filename"]
        assert len(model["filename"]) <= 255 and model["filename"].startswith(("pwned", "a", "x"))
        stored = stack.store().list_keys(f"models/{model['id']}/")
        assert stored == [f"models/{model['id']}/upload"], "stored under a server-made name"
    assert not Path("/tmp/pwned.onnx").exists(), "a client file name chose a path"


def _plant(stack: Stack, fmt: str, body: bytes, details: dict) -> str:
    """A model row and stored file made directly, as if the API's checks had been bypassed, so the worker's
    own defences are what is tested."""
    from app.db.models import Model, new_id
    from app.db.session import session_scope

    model_id = new_id("mdl")
    source = stack.home / f"{model_id}.bin"
    source.write_bytes(body)
    key = f"models/{model_id}/upload"
    stack.store().put_file(key, source)  # moves the file into the store
    with session_scope(stack.database_url) as session:
        session.add(
            Model(
                id=model_id,
                tenant=TENANT,
                filename="planted",
                format=fmt,
                sha256=hashlib.sha256(body).hexdigest(),
                size_bytes=len(body),
                storage_key=key,
                inputs=[{"name": "x", "dtype": "float32", "shape": [1, 4]}],
                outputs=[{"name": "y", "dtype": "float32", "shape": [1, 4]}],
                param_count=4,
                details=details,
            )
        )
    return model_id


def test_the_worker_refuses_what_slips_past_the_api_and_stays_alive(
    hostile: httpx.Client, stack: Stack, canary: Path, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_bytes(SECRET_TEXT)
    escape = os.path.relpath(secret, stack.home / "work" / "job" / "original" / "m")
    planted = [
        ("pickle as onnx", _plant(stack, "onnx", pickle.dumps(_Canary(str(canary))), {})),
        (
            "external data escaping the folder",
            _plant(
                stack,
                "onnx_zip",
                _zip({"m/model.onnx": tiny_onnx(escape), "m/w.bin": b"\0" * 16}),
                {"onnx_member": "m/model.onnx"},
            ),
        ),
        (
            "absolute external data",
            _plant(stack, "onnx_zip", _zip({"m/model.onnx": tiny_onnx(str(secret))}), {"onnx_member": "m/model.onnx"}),
        ),
    ]
    spec = {"passes": [{"type": "optimize"}], "evaluate": {"samples": 1, "latency": {"runs": 1, "warmup": 0}}}
    for label, model_id in planted:
        job = hostile.post("/v1/jobs", json={**spec, "model_id": model_id})
        assert job.status_code == 202, job.text
        final = stack.wait_for(hostile, job.json()["id"])
        assert final["status"] == "failed", f"{label}: {final}"
        if "external" in label:
            assert final["error"]["code"] == "unsafe_external_data", final["error"]
        assert SECRET_TEXT.decode() not in str(final), f"{label} leaked the secret"
        assert not canary.exists(), f"{label} executed code"
        assert stack.worker.poll() is None, f"the worker died on {label}"
    good = _plant(stack, "onnx", tiny_onnx(), {})
    job = hostile.post("/v1/jobs", json={**spec, "model_id": good}).json()
    assert stack.wait_for(hostile, job["id"])["status"] == "succeeded", "the worker runs the next job"


def test_nul_in_ids_and_cursors_is_a_client_error(hostile: httpx.Client) -> None:
    """PostgreSQL text cannot hold NUL; such a value must be the client's 4xx, never a 500."""
    for path, params in [
        ("/v1/models/mdl_a%00b", {}),
        ("/v1/jobs/job_a%00b/report", {}),
        ("/v1/jobs", {"cursor": "job_\x00"}),
        ("/v1/artifacts/art_%00", {}),
    ]:
        response = hostile.get(path, params=params)
        assert 400 <= response.status_code < 500, f"{path}: {response.status_code} {response.text[:200]}"
    response = hostile.post("/v1/jobs", json={"model_id": "mdl_\x00", "passes": [{"type": "optimize"}]})
    assert response.status_code == 422, response.text

"""The measure-once key: the same model, settings and machine give the same key; another machine (or an
upgraded library), other evaluation settings, another tenant or other model bytes give another, so a stale
figure is never read back."""

from app.schemas.common import TensorInfo
from app.schemas.jobs import JobSpec
from app.schemas.tasks import ChildTask, ModelRecord
from app.settings import Settings
from passes.planner import plan
from workers.evaluation.original_cache import cache_key, fingerprint


def _task(sha256: str = "a" * 64, runs: int = 10, threads: int = 1) -> ChildTask:
    spec = JobSpec.model_validate(
        {
            "model_id": "mdl_x",
            "passes": [{"type": "quantize", "method": "dynamic"}],
            "input_shapes": {"x": [4, 8]},
            "evaluate": {"latency": {"runs": runs}},
        }
    )
    model = ModelRecord(
        id="mdl_x",
        format="onnx",
        inputs=[TensorInfo(name="x", dtype="float32", shape=["batch", 8])],
        outputs=[TensorInfo(name="y", dtype="float32", shape=["batch", 2])],
        details={},
        size_bytes=100,
        sha256=sha256,
        param_count=16,
    )
    return ChildTask(
        spec=spec,
        plan=plan(spec.passes, model.format),
        model=model,
        datasets={},
        threads=threads,
        max_unpacked_bytes=1,
        floors=Settings().fidelity_floors,
    )


def test_the_same_job_on_the_same_machine_has_the_same_key() -> None:
    machine = fingerprint()
    assert cache_key(_task(), "t", machine) == cache_key(_task(), "t", fingerprint()), "a later job finds the entry"


def test_another_machine_or_library_version_is_another_key() -> None:
    machine = fingerprint()
    moved = {**machine, "cpu": machine["cpu"] + " (another host)"}
    upgraded = {**machine, "versions": {**machine["versions"], "onnxruntime": "99.0"}}
    assert cache_key(_task(), "t", moved) != cache_key(_task(), "t", machine), "a new machine measures anew"
    assert cache_key(_task(), "t", upgraded) != cache_key(_task(), "t", machine), "a new onnxruntime measures anew"


def test_settings_tenant_and_model_bytes_are_in_the_key() -> None:
    machine = fingerprint()
    base = cache_key(_task(), "t", machine)
    assert cache_key(_task(runs=20), "t", machine) != base, "other latency settings"
    assert cache_key(_task(threads=2), "t", machine) != base, "another thread count"
    assert cache_key(_task(), "other", machine) != base, "another tenant never reads this tenant's figures"
    assert cache_key(_task(sha256="b" * 64), "t", machine) != base, "other model bytes"

"""Fixtures of the security suite: a second API process with tight limits (1 MiB uploads, a small rate
bucket, one active job per tenant) on the same database, and small ONNX builders for hostile files."""

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from tests.conftest import Stack, start_api_process

LIMITED_ENV = {
    "MAX_UPLOAD_BYTES": str(1 << 20),
    "RATE_LIMIT_PER_S": "0.2",
    "RATE_LIMIT_BURST": "6",
    "MAX_ACTIVE_JOBS_PER_TENANT": "1",
    "ALLOW_TORCHSCRIPT_UPLOADS": "false",  # the default, which the main test stack overrides
    "METRICS_TOKEN": "metrics-secret",
}


@pytest.fixture(scope="session")
def limited(stack: Stack) -> Iterator[Stack]:
    """An API-only process with tight limits. Its queue prefix is its own, so no worker takes its jobs:
    they stay queued, which is what the active-job cap test needs."""
    env = {**stack.env, **LIMITED_ENV, "QUEUE_PREFIX": f"lim{uuid.uuid4().hex[:6]}-"}
    api, url = start_api_process({**os.environ, **env}, stack.home / "logs" / "limited-api.log")
    yield Stack(url, env, stack.home, stack.database_url, stack.worker, api)
    api.terminate()
    try:
        api.wait(timeout=30)
    except subprocess.TimeoutExpired:
        api.kill()


def tiny_onnx(initializer_location: str | None = None, constant_dims: list[int] | None = None) -> bytes:
    """y = x + w for x of shape [1, 4]: with `initializer_location`, w lives in that external data file;
    with `constant_dims`, w is a Constant node declaring those dims but carrying 16 bytes."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((1, 4), np.float32), "w")
    nodes = [helper.make_node("Add", ["x", "w"], ["y"])]
    initializers = [w]
    if initializer_location is not None:
        w.ClearField("raw_data")
        w.data_location = TensorProto.EXTERNAL
        for key, value in (("location", initializer_location), ("offset", "0"), ("length", "16")):
            entry = w.external_data.add()
            entry.key, entry.value = key, value
    if constant_dims is not None:
        initializers = []
        const = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=constant_dims, raw_data=b"\0" * 16)
        nodes.insert(0, helper.make_node("Constant", [], ["w"], value=const))
    graph = helper.make_graph(
        nodes,
        "tiny",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])],
        initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    return bytes(model.SerializeToString())

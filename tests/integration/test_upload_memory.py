"""A 1 GiB model upload leaves the API's memory flat: the real server streams it to disk and inspects it
by its graph without weights (or a zip by its directory), so its resident memory grows by less than
64 MiB during the upload, one at a time and two at once."""

import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from onnx import TensorProto, helper

from tests.conftest import Stack

GIB = 1 << 30
MIB = 1 << 20
LIMIT_MIB = 64
SIDE = 16384
"""A float32 weight of SIDE x SIDE is exactly 1 GiB."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(out + bytes([value]))


def _field(number: int, payload_length: int) -> bytes:
    """The tag and length of a length-delimited protobuf field whose payload follows."""
    return _varint(number << 3 | 2) + _varint(payload_length)


def _graph(external: bool) -> bytes:
    """y = x @ w with w an initializer named `w`; inline (its data appended later) or in `model.onnx.data`."""
    weight = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", SIDE])
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", SIDE])
    inits = []
    if external:
        tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[SIDE, SIDE])
        tensor.data_location = TensorProto.EXTERNAL
        for key, value in {"location": "model.onnx.data", "offset": "0", "length": str(GIB)}.items():
            tensor.external_data.add(key=key, value=value)
        inits.append(tensor)
    graph = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "big", [weight], [out], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def write_inline_onnx(path: Path) -> None:
    """A 1 GiB .onnx with the weight inline, written without building it in memory: the small model, then a
    second `graph` field (protobuf merges it into the first) holding the initializer, whose raw_data is a
    hole in a sparse file."""
    header = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[SIDE, SIDE]).SerializeToString()
    tensor_length = len(header) + len(_field(9, GIB)) + GIB
    with path.open("wb") as fh:
        fh.write(_graph(external=False))
        fh.write(_field(7, len(_field(5, tensor_length)) + tensor_length))
        fh.write(_field(5, tensor_length) + header + _field(9, GIB))
        fh.truncate(fh.tell() + GIB)


def write_zipped_onnx(path: Path) -> None:
    """A zip of model.onnx (the weight as external data) and its 1 GiB model.onnx.data, streamed in."""
    chunk = bytes(8 * MIB)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("model.onnx", _graph(external=True))
        with zf.open("model.onnx.data", "w", force_zip64=True) as data:
            for _ in range(GIB // len(chunk)):
                data.write(chunk)


def rss_bytes(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


class PeakRss(threading.Thread):
    """Samples a process's resident memory every 20 ms and keeps the highest."""

    def __init__(self, pid: int) -> None:
        super().__init__(daemon=True)
        self.pid, self.peak, self.done = pid, rss_bytes(pid), threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.02):
            self.peak = max(self.peak, rss_bytes(self.pid))


@pytest.fixture(scope="module")
def big_models(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    folder = tmp_path_factory.mktemp("big-models")
    files = {"onnx": folder / "big.onnx", "onnx_zip": folder / "big.zip"}
    write_inline_onnx(files["onnx"])
    write_zipped_onnx(files["onnx_zip"])
    yield files
    for path in files.values():
        path.unlink()


def _upload(stack: Stack, path: Path, results: list[httpx.Response]) -> None:
    with stack.client() as client, path.open("rb") as fh:
        results.append(client.post("/v1/models", files={"file": (path.name, fh)}, timeout=600))


def _growth_during(stack: Stack, paths: list[Path]) -> tuple[float, list[httpx.Response]]:
    """Upload `paths` at once; the API's RSS growth in MiB (peak during, over before) and the answers."""
    with stack.client() as client:
        client.get("/v1/models").raise_for_status()  # first-request work is not the upload's
    results: list[httpx.Response] = []
    sampler = PeakRss(stack.api.pid)
    before = sampler.peak
    sampler.start()
    threads = [threading.Thread(target=_upload, args=(stack, path, results)) for path in paths]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sampler.done.set()
    sampler.join()
    with stack.client() as client:  # the stored copies go: 1 GiB each
        for response in results:
            if response.status_code == 201:
                client.delete(f"/v1/models/{response.json()['id']}").raise_for_status()
    return (sampler.peak - before) / MIB, results


@pytest.mark.parametrize("kind", ["onnx", "onnx_zip"])
def test_a_1_gib_upload_grows_the_api_by_less_than_64_mib(stack: Stack, big_models: dict[str, Path], kind: str) -> None:
    growth, [response] = _growth_during(stack, [big_models[kind]])
    assert response.status_code == 201, response.text
    model = response.json()
    assert model["format"] == kind and model["size_bytes"] >= GIB, f"the upload was not read as {kind}: {model}"
    assert model["param_count"] == SIDE * SIDE, "the weight's shape was not read from the graph"
    assert growth < LIMIT_MIB, f"the API grew by {growth:.1f} MiB during a 1 GiB {kind} upload"


def test_two_1_gib_uploads_at_once_keep_the_api_flat(stack: Stack, big_models: dict[str, Path]) -> None:
    growth, responses = _growth_during(stack, [big_models["onnx"], big_models["onnx_zip"]])
    assert [r.status_code for r in responses] == [201, 201], [r.text[:300] for r in responses]
    assert growth < LIMIT_MIB, f"the API grew by {growth:.1f} MiB during two 1 GiB uploads at once"

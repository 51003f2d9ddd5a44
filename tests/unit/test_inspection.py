"""Format detection and signatures without torch or unpickling, on files made by the real libraries."""

import io
import pickle
import zipfile
from pathlib import Path

import pytest
import torch

from app.archives import UnsafeArchive, check_zip, safe_extract
from app.errors import ModelLimitsExceeded, UnsafeModelFormat, UnsupportedModelFormat
from app.services.inspection import GraphLimits, forward_arguments, inspect_model


class Tiny(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("formats")
    model, x = Tiny().eval(), torch.randn(2, 4)
    out = {"pt2": root / "m.pt2", "ts": root / "m.ts", "pickle": root / "m.pt", "onnx": root / "m.onnx"}
    torch.export.save(torch.export.export(model, (x,), dynamic_shapes=({0: torch.export.Dim("batch")},)), out["pt2"])
    torch.jit.save(torch.jit.trace(model, x), out["ts"])
    torch.save(model, out["pickle"])
    torch.onnx.export(model, (x,), str(out["onnx"]), input_names=["x"], dynamo=True, external_data=False)
    return out


@pytest.mark.parametrize("name", ["m.pt2", "m.zip"])
def test_exported_program_is_refused_by_name_and_by_layout(files: dict[str, Path], name: str) -> None:
    with pytest.raises(UnsafeModelFormat, match=r"torch.export.*torch.onnx.export"):
        inspect_model(files["pt2"], name, 10**9)


def test_torchscript_is_refused_unless_allowed(files: dict[str, Path]) -> None:
    with pytest.raises(UnsafeModelFormat, match="ALLOW_TORCHSCRIPT_UPLOADS"):
        inspect_model(files["ts"], "m.ts", 10**9)


def test_allowed_torchscript_is_detected_with_unknown_shapes(files: dict[str, Path]) -> None:
    info = inspect_model(files["ts"], "m.ts", 10**9, allow_torchscript=True)
    assert info.format == "torchscript" and info.inputs[0]["name"] == "x" and info.inputs[0]["shape"] is None


@pytest.mark.parametrize(
    ("code", "expected"),
    [
        ("def forward(self,\n    x: Tensor,\n    y: Tuple[Tensor, Tensor]) -> Tensor:", ["x", "y"]),
        ("def forward(self: __torch__.M) -> Tensor:", []),
        ("no forward here", []),
    ],
)
def test_forward_arguments(code: str, expected: list[str]) -> None:
    assert forward_arguments(code) == expected


def test_onnx_signature(files: dict[str, Path]) -> None:
    info = inspect_model(files["onnx"], "m.onnx", 10**9)
    assert info.format == "onnx" and info.param_count == 15 and info.inputs[0]["shape"] == [2, 4]


def test_torch_save_is_refused(files: dict[str, Path]) -> None:
    with pytest.raises(UnsafeModelFormat, match="pickle"):
        inspect_model(files["pickle"], "m.pt", 10**9)


def test_raw_pickle_named_onnx_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "model.onnx"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(UnsafeModelFormat):
        inspect_model(path, "model.onnx", 10**9)


def test_hf_folder_with_only_pickled_weights_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "hf.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("m/config.json", "{}")
        zf.writestr("m/pytorch_model.bin", pickle.dumps({}))
    with pytest.raises(UnsafeModelFormat, match="pytorch_model.bin"):
        inspect_model(path, "hf.zip", 10**9)


def test_truncated_onnx_is_unsupported(files: dict[str, Path], tmp_path: Path) -> None:
    path = tmp_path / "cut.onnx"
    path.write_bytes(files["onnx"].read_bytes()[:100])
    with pytest.raises(UnsupportedModelFormat):
        inspect_model(path, "cut.onnx", 10**9)


def _zip(entries: dict[str, bytes], link: str | None = None) -> zipfile.ZipFile:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        if link:
            info = zipfile.ZipInfo(link)
            info.external_attr = 0o120777 << 16
            zf.writestr(info, "/etc/passwd")
    return zipfile.ZipFile(io.BytesIO(buf.getvalue()))


@pytest.mark.parametrize(
    ("entries", "link", "message"),
    [
        ({"../evil": b"x"}, None, "outside"),
        ({"/abs/evil": b"x"}, None, "outside"),
        ({}, "model/link", "symbolic link"),
        ({"bomb": b"\0" * (8 << 20)}, None, "zip bomb"),
    ],
)
def test_hostile_archives_are_refused(entries: dict[str, bytes], link: str | None, message: str) -> None:
    with pytest.raises(UnsafeArchive, match=message):
        check_zip(_zip(entries, link), 10**9)


def test_safe_extract_stays_inside(tmp_path: Path) -> None:
    archive = tmp_path / "ok.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("model/a.txt", "hello")
    safe_extract(archive, tmp_path / "out", 10**6)
    assert (tmp_path / "out" / "model" / "a.txt").read_text() == "hello"


def test_a_sparse_tensor_counts_at_its_dense_size(tmp_path: Path) -> None:
    from onnx import TensorProto, helper

    values = helper.make_tensor("w", TensorProto.FLOAT, [1], [1.0])
    indices = helper.make_tensor("w_indices", TensorProto.INT64, [1], [0])
    sparse = helper.make_sparse_tensor(values, indices, [1 << 20, 1 << 20])  # 4 TiB dense, 4 bytes stored
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["y"], sparse_value=sparse)],
        "sparse",
        [],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1 << 20, 1 << 20])],
    )
    path = tmp_path / "sparse.onnx"
    path.write_bytes(helper.make_model(graph).SerializeToString())
    with pytest.raises(ModelLimitsExceeded, match="MAX_TENSOR_BYTES"):
        inspect_model(path, "sparse.onnx", 10**9, GraphLimits(max_nodes=100, max_tensor_bytes=1 << 30))

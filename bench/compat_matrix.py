"""The compatibility matrix: every corpus model (tests/compat/corpus.py: 12 small models written the ways
torch's exporters, Paddle2ONNX, Caffe2-era tools and tf2onnx write them) through every ONNX pipeline of the
embedded service, each cell the mean cosine of the downloaded artifact to the upload (least over float
outputs, run here with onnxruntime's default session options) or the refusal's error code.

    python -m bench.compat_matrix [--workers 3]

Prints a Markdown table (the README's), then how many cells gave an artifact above its floor, how many
were documented refusals, and the wall time from first submit to last result.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from tests.compat.corpus import build_corpus
from tests.compat.matrix import EXPECTED_REFUSALS, FLOORS, render, run_matrix


def wait_ready(client: httpx.Client, server: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while True:
        try:
            if client.get("/readyz").status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            raise RuntimeError(f"the service did not start: {log.read_text()[-2000:]}")
        time.sleep(0.3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3, help="worker processes beside the API")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="squeeze-compat-") as tmp:
        home = Path(tmp)
        corpus = build_corpus(home / "corpus")
        port = 18000 + os.getpid() % 1000
        log = home / "serve.log"
        server = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port), "--workers", str(args.workers)],
            env={**os.environ, "SQUEEZE_HOME": str(home / "var")},
            stdout=log.open("wb"),
            stderr=subprocess.STDOUT,
        )
        try:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
                wait_ready(client, server, log)
                client.headers["Authorization"] = f"Bearer {(home / 'var' / 'local-api-key').read_text().strip()}"
                (home / "artifacts").mkdir()
                t0 = time.perf_counter()
                outcomes = run_matrix(client, corpus, home / "artifacts", timeout=1800)
                seconds = time.perf_counter() - t0
        finally:
            server.terminate()
            server.wait(timeout=60)
    print(render(corpus, outcomes))
    met = sum(o.expected and o.status == "artifact" for o in outcomes)
    refused = sum(o.expected and o.status == "refused" for o in outcomes)
    print(
        f"\n{len(corpus)} models, {len(outcomes)} cells: {met} artifacts above their floor "
        f"({', '.join(f'{c} {f}' for c, f in FLOORS.items())}), {refused} documented refusals "
        f"(of {len(EXPECTED_REFUSALS)} listed), {len(outcomes) - met - refused} unexpected; "
        f"{seconds:.0f} s with {args.workers} workers"
    )


if __name__ == "__main__":
    main()

"""Benchmark: what a job costs beyond its work. The digits CNN's [quantize static] job (result cache off, so
every job runs) submitted `--jobs` times to the embedded service (`squeeze serve`), with each worker's next
pipeline process prestarted (PRESTART_CHILDREN, the default) and without, against a quantize_static script
on the same calibration samples.

    make job-overhead     (or: python -m bench.job_overhead [--jobs 3])

A job's seconds run from submit to succeeded, seen by a client polling every 0.2 s; they include the
evaluation of the original and the result (accuracy, fidelity, latency at batch 1 and 32), which the script
does not do. Prints each job's seconds, the median per setting, and the ratios.
"""

import argparse
import os
import statistics
import tempfile
from pathlib import Path

import bench.minilm as minilm


def job_seconds(work: Path, jobs: int, prestart: bool) -> tuple[list[float], list[float]]:
    """The seconds of each job and of the script beside it, on a fresh service."""
    os.environ["PRESTART_CHILDREN"] = "true" if prestart else "false"
    uncached = minilm.run_job
    minilm.run_job = lambda client, spec, out: uncached(client, {**spec, "cache": False}, out)
    try:
        with minilm.service(work / "home") as client:
            runs = [minilm.cnn_seconds(_fresh(work / f"run{i}"), client) for i in range(jobs)]
    finally:
        minilm.run_job = uncached
    return [job for job, _ in runs], [script for _, script in runs]


def _fresh(folder: Path) -> Path:
    folder.mkdir(parents=True)
    return folder


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=3)
    args = parser.parse_args()
    medians = {}
    for prestart in (True, False):
        with tempfile.TemporaryDirectory(prefix="squeeze-overhead-") as tmp:
            jobs, scripts = job_seconds(Path(tmp), args.jobs, prestart)
        label = "prestarted" if prestart else "cold start"
        medians[label] = statistics.median(jobs)
        script = statistics.median(scripts)
        print(
            f"digits CNN static int8, {label}: jobs {', '.join(f'{s:.2f}' for s in jobs)} s (median "
            f"{medians[label]:.2f} s) vs quantize_static script {script:.3f} s: x{medians[label] / script:.0f}"
        )
    print(f"prestarted over cold start: x{medians['cold start'] / medians['prestarted']:.2f} faster per job")


if __name__ == "__main__":
    main()

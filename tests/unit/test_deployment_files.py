"""The deployment files stay in step with the code: compose names every service the design promises,
the images start the commands that exist, and CI runs the README's test command."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def test_compose_has_api_workers_and_backing_services() -> None:
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"api", "worker-cpu", "worker-gpu", "redis", "postgres", "minio"} <= set(services), sorted(services)
    for name in ("api", "worker-cpu", "worker-gpu"):
        env = services[name]["environment"]
        assert env["DATABASE_URL"].startswith("postgresql+psycopg://"), f"{name} must use PostgreSQL"
        assert env["BROKER_URL"].startswith("redis://"), f"{name} must use Redis"
        assert env["STORAGE_URL"].startswith("s3://"), f"{name} must store artifacts in the bucket"
        assert env["S3_ENDPOINT_URL"] == "http://minio:9000", f"{name} must reach MinIO"
        assert "volumes" not in services[name], f"{name} must share no volume: hosts share only the services"
    bucket = services["minio-bucket"]
    assert "mb --ignore-existing local/squeeze" in bucket["entrypoint"][-1], "the bucket STORAGE_URL names is made"
    assert services["api"]["depends_on"]["minio-bucket"] == {"condition": "service_completed_successfully"}
    gpu = services["worker-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]
    assert gpu["driver"] == "nvidia" and "gpu" in gpu["capabilities"], "the GPU worker reserves an NVIDIA GPU"


def test_dockerfile_targets_and_commands_exist() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    for target in ("api", "worker", "worker-gpu"):
        assert f" AS {target}\n" in dockerfile, f"Dockerfile lacks target {target}"
    api_stage = dockerfile.split(" AS api\n")[1].split("FROM ")[0]
    assert "torch" not in api_stage, "the API image must not install torch"
    assert "torch==2.13.0" in dockerfile, "workers pin torch like the Makefile"


def test_ci_runs_the_readme_test_command() -> None:
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    assert "make test" in (ROOT / "README.md").read_text()

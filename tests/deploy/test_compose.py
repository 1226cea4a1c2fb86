"""docker/compose.yaml and docker/env/*.env.example: what is published, who needs which secret,
and that every value agrees with the image, the entrypoint and ``service.settings.Settings``."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from deploytools import (
    DOCKER,
    SETTINGS_ENV,
    SHARED_MOUNTS,
    compose,
    entrypoint_command,
    env_example,
    flag,
    interpolate,
    service_env,
)

from service.core.auth import TokenTable
from service.settings import Settings

BCKD_SERVICES = ("ray-head", "ray-worker", "api", "mlflow")  # run the bckd image
RAY_SERVICES = ("ray-head", "ray-worker")
PUBLISHED = {"api": 8000, "ray-head": 8265, "mlflow": 5000}


def _ports(service: str) -> list[str]:
    return [interpolate(p) for p in compose()["services"][service].get("ports", [])]


def test_only_the_api_ray_dashboard_and_mlflow_ui_are_published_on_loopback_by_default():
    published = {name: _ports(name) for name in compose()["services"] if _ports(name)}
    assert published == {name: [f"127.0.0.1:{port}:{port}"] for name, port in PUBLISHED.items()}
    for name in PUBLISHED:
        assert compose()["services"][name]["ports"][0].startswith("${PUBLISH_ADDRESS:-127.0.0.1}")


def test_published_ports_are_the_ports_each_role_listens_on():
    assert flag(entrypoint_command("api", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t"),
                "--port") == "8000"
    head = entrypoint_command("ray-head", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t")
    assert flag(head, "--dashboard-port") == "8265"
    assert flag(head, "--dashboard-host") == "0.0.0.0"
    mlflow = entrypoint_command("mlflow", MLFLOW_AUTH_CONFIG_PATH="/dev/null",
                                **env_example("mlflow"))
    assert flag(mlflow, "--port") == "5000"
    assert flag(mlflow, "--app-name") == "basic-auth"


def test_every_service_has_a_healthcheck_and_the_bckd_ones_share_one_image():
    services = compose()["services"]
    for name, svc in services.items():
        assert "healthcheck" in svc, name
    images = {services[n]["image"] for n in BCKD_SERVICES}
    builds = {str(services[n]["build"]) for n in BCKD_SERVICES}
    assert len(images) == 1 and len(builds) == 1, (images, builds)
    build = services["api"]["build"]
    assert (DOCKER / build["context"] / build["dockerfile"]).resolve() == DOCKER / "Dockerfile"
    for name in BCKD_SERVICES:
        role = services[name]["command"][0]
        assert services[name]["healthcheck"]["test"][-2:] == ["healthcheck", role]


def test_ray_workers_scale_and_both_ray_roles_get_shared_memory():
    worker = compose()["services"]["ray-worker"]
    assert "container_name" not in worker and "ports" not in worker  # --scale ray-worker=N
    assert interpolate(worker["environment"]["NODE_HEAD_ADDRESS"]) == "ray-head:6379"
    head = entrypoint_command("ray-head", RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="t")
    assert flag(head, "--port") == "6379"
    for name in RAY_SERVICES:
        assert compose()["services"][name]["shm_size"] == "2gb", name


@pytest.mark.parametrize("service", ["ray-head", "ray-worker", "api"])
def test_ray_token_auth_reaches_every_ray_node_and_the_api(service):
    env = service_env(service)
    assert env["RAY_AUTH_MODE"] == "token"
    assert env["RAY_AUTH_TOKEN"].startswith("CHANGE_ME_"), "a real token in a committed file"


@pytest.mark.parametrize("role", ["ray-head", "ray-worker", "api"])
def test_the_entrypoint_refuses_to_start_ray_or_the_api_without_token_auth(role):
    for env in ({}, {"RAY_AUTH_MODE": "disabled", "RAY_AUTH_TOKEN": "t"},
                {"RAY_AUTH_MODE": "token"}):
        proc = subprocess.run(["bash", str(DOCKER / "entrypoint.sh"), role], env={
            "PATH": "/usr/bin:/bin", "ENTRYPOINT_DRY_RUN": "1", **env},
            capture_output=True, text=True, timeout=30)
        assert proc.returncode == 64, (env, proc.stdout)
        assert "RAY_AUTH" in proc.stderr


def test_mlflow_needs_a_user_and_everything_that_logs_has_one():
    mlflow = service_env("mlflow")
    password = mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"]
    for name in ("api", *RAY_SERVICES):  # the API, job drivers, Train workers
        env = service_env(name)
        assert env["MLFLOW_TRACKING_USERNAME"] == mlflow["MLFLOW_AUTH_ADMIN_USERNAME"], name
        assert env["MLFLOW_TRACKING_PASSWORD"] == password, name


@pytest.mark.parametrize("service", BCKD_SERVICES + ("postgres", "minio"))
def test_env_names_of_bckd_are_settings_fields(service):
    unknown = {k for k in service_env(service) if k.startswith("BCKD_")} - SETTINGS_ENV
    assert not unknown, f"{service}: {unknown} are not fields of service.settings.Settings"


def _api_settings(monkeypatch) -> Settings:
    for key in SETTINGS_ENV:
        monkeypatch.delenv(key, raising=False)
    for key, value in service_env("api").items():
        monkeypatch.setenv(key, interpolate(value))
    return Settings()


def test_the_api_settings_point_at_the_compose_services(monkeypatch):
    s = _api_settings(monkeypatch)
    ray = urlsplit(s.ray_address)
    assert (ray.hostname, ray.port) == ("ray-head", 8265)
    mlflow = urlsplit(s.mlflow_uri)
    assert (mlflow.hostname, mlflow.port) == ("mlflow", 5000)
    assert urlsplit(s.ray_dashboard_url).port == 8265
    assert urlsplit(s.mlflow_public_url).port == 5000
    db = urlsplit(s.database_url)
    pg = service_env("postgres")
    assert (db.hostname, db.port, db.username, db.password, db.path) == (
        "postgres", 5432, pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"], f"/{pg['POSTGRES_DB']}")
    assert s.database_url.startswith("postgresql+psycopg2://")  # psycopg2-binary in the image


def test_the_api_and_every_ray_node_mount_the_paths_the_settings_name(monkeypatch):
    s = _api_settings(monkeypatch)
    assert {str(p) for p in s.data_roots} | {str(s.data_dir)} == SHARED_MOUNTS
    for name in ("api", *RAY_SERVICES):
        mounts = {v.split(":")[1] for v in compose()["services"][name]["volumes"]}
        assert mounts == SHARED_MOUNTS, name
        for volume in compose()["services"][name]["volumes"]:
            assert volume.split(":")[0] in compose()["volumes"]


def test_mlflow_stores_runs_in_postgres_and_artifacts_in_minio():
    mlflow, s3, minio = service_env("mlflow"), env_example("s3"), env_example("minio")
    pg = env_example("postgres")
    init = (DOCKER / "postgres" / "init.sql").read_text()
    for key in ("MLFLOW_BACKEND_STORE_URI", "MLFLOW_AUTH_DATABASE_URI"):
        url = urlsplit(mlflow[key])
        assert (url.scheme, url.hostname, url.username, url.password) == (
            "postgresql", "postgres", pg["POSTGRES_USER"], pg["POSTGRES_PASSWORD"]), key
        assert f"CREATE DATABASE {url.path.lstrip('/')};" in init, key
    bucket = urlsplit(mlflow["MLFLOW_ARTIFACTS_DESTINATION"])
    assert bucket.scheme == "s3" and bucket.hostname in mlflow["S3_BUCKETS"].split()
    assert "ray-checkpoints" in mlflow["S3_BUCKETS"].split()
    assert (s3["AWS_ACCESS_KEY_ID"], s3["AWS_SECRET_ACCESS_KEY"]) == (
        minio["MINIO_ROOT_USER"], minio["MINIO_ROOT_PASSWORD"])
    assert urlsplit(s3["AWS_ENDPOINT_URL"]).hostname == "minio"
    assert mlflow["MLFLOW_S3_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL"]
    for name in RAY_SERVICES:  # Ray Train's s3:// checkpoints use the same endpoint and keys
        assert service_env(name)["AWS_ENDPOINT_URL"] == s3["AWS_ENDPOINT_URL"]


def test_every_env_file_compose_reads_has_a_committed_example():
    for svc in compose()["services"].values():
        for path in svc.get("env_file", []):
            assert (DOCKER / f"{path}.example").is_file(), path
    ignored = (DOCKER / ".gitignore").read_text()
    assert "/env/*.env" in ignored and "/env/admin_token" in ignored


def test_make_env_fills_every_placeholder_consistently(tmp_path: Path):
    subprocess.run(["bash", str(DOCKER / "make-env.sh"), str(tmp_path)], check=True,
                   capture_output=True, timeout=30)
    files = {p.name: p.read_text() for p in tmp_path.glob("*.env")}
    assert set(files) == {p.name.removesuffix(".example")
                          for p in (DOCKER / "env").glob("*.env.example")}
    assert not [n for n, text in files.items() if "CHANGE_ME" in text]
    assert all(p.stat().st_mode & 0o077 == 0 for p in tmp_path.iterdir())

    def env(name: str) -> dict[str, str]:
        lines = [x for x in files[name].splitlines() if x and not x.startswith("#")]
        return dict(x.split("=", 1) for x in lines)

    assert env("s3.env")["AWS_SECRET_ACCESS_KEY"] == env("minio.env")["MINIO_ROOT_PASSWORD"]
    assert urlsplit(env("api.env")["BCKD_DATABASE_URL"]).password == \
        env("postgres.env")["POSTGRES_PASSWORD"]
    assert env("mlflow-client.env")["MLFLOW_TRACKING_PASSWORD"] == \
        env("mlflow.env")["MLFLOW_AUTH_ADMIN_PASSWORD"]
    assert env("ray.env")["RAY_AUTH_TOKEN"] != env("postgres.env")["POSTGRES_PASSWORD"]
    admin = (tmp_path / "admin_token").read_text().strip()
    table = TokenTable.load(None, env("api.env")["BCKD_TOKENS"])
    assert table.lookup(admin) is not None and table.lookup(admin).admin
    assert hashlib.sha256(admin.encode()).hexdigest() in files["api.env"]
    # A second run keeps the secrets it wrote.
    before = files["ray.env"]
    subprocess.run(["bash", str(DOCKER / "make-env.sh"), str(tmp_path)], check=True,
                   capture_output=True, timeout=30)
    assert (tmp_path / "ray.env").read_text() == before

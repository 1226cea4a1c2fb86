"""docker/compose.yaml and docker/env/*.env.example: what is published, who needs which secret,
and that every value agrees with the image, the entrypoint and ``service.settings.Settings``."""

from __future__ import annotations

import hashlib
import subprocess
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import yaml
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

from bckd.tracking.login import LOGIN_ENV
from service.core.auth import OWNER_NAME, TokenTable
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


def test_the_api_holds_the_mlflow_admin_login_under_a_name_no_owner_can_have(monkeypatch):
    mlflow = service_env("mlflow")
    admin = (mlflow["MLFLOW_AUTH_ADMIN_USERNAME"], mlflow["MLFLOW_AUTH_ADMIN_PASSWORD"])
    api = service_env("api")
    assert tuple(api[k] for k in LOGIN_ENV) == admin
    s = _api_settings(monkeypatch)
    assert (s.mlflow_admin_username, s.mlflow_admin_password) == admin
    assert not OWNER_NAME.fullmatch(admin[0])  # no owner is refused a login for the admin's name


def _gpu_override(service: str) -> dict:
    return yaml.safe_load((DOCKER / "compose.gpu.yaml").read_text())["services"].get(service, {})


@pytest.mark.parametrize("service", RAY_SERVICES)
def test_no_ray_node_has_an_mlflow_login(service):
    """Job drivers and Train workers log with their owner's login, from the job's submission
    (``service.core.jobs.driver_env``); a node's own login would be what a job without one
    falls back to."""
    password = service_env("mlflow")["MLFLOW_AUTH_ADMIN_PASSWORD"]
    gpu = _gpu_override(service)
    assert "env_file" not in gpu, service
    env = {**service_env(service), **{k: str(v) for k, v in gpu.get("environment", {}).items()}}
    assert not set(LOGIN_ENV) & set(env), service
    assert not [k for k, v in env.items() if password in v], service


def test_mlflow_grants_nothing_by_default(tmp_path: Path, monkeypatch):
    """The ini the entrypoint writes, as MLflow's auth app reads it: no default permission,
    whatever the environment asks, and the admin is the API's login."""
    from mlflow.server.auth.config import read_auth_config

    ini = tmp_path / "basic-auth.ini"
    mlflow = service_env("mlflow")
    admin = service_env("api")["MLFLOW_TRACKING_USERNAME"]
    unnamed = {k: v for k, v in mlflow.items() if k != "MLFLOW_AUTH_ADMIN_USERNAME"}
    entrypoint_command("mlflow", MLFLOW_AUTH_CONFIG_PATH=str(ini),
                       MLFLOW_AUTH_DEFAULT_PERMISSION="READ", **unnamed)
    assert ini.stat().st_mode & 0o077 == 0  # it names the auth database's URI and password
    monkeypatch.delenv("MLFLOW_AUTH_ADMIN_USERNAME", raising=False)
    for key, value in unnamed.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("MLFLOW_AUTH_CONFIG_PATH", str(ini))
    config = read_auth_config()
    assert config.default_permission == "NO_PERMISSIONS"
    assert config.admin_username == admin  # the ini's default, without MLFLOW_AUTH_ADMIN_USERNAME
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", mlflow["MLFLOW_AUTH_ADMIN_USERNAME"])
    assert read_auth_config().admin_username == admin


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
    assert [env("api.env")[k] for k in LOGIN_ENV] == [
        env("mlflow.env")[k] for k in ("MLFLOW_AUTH_ADMIN_USERNAME", "MLFLOW_AUTH_ADMIN_PASSWORD")]
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

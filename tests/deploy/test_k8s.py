"""docker/k8s: the manifests parse, the RayCluster autoscales a GPU group from zero with token
auth, and images, ports, secrets, mounts and ``BCKD_*`` values agree with compose and the code."""

from __future__ import annotations

import configparser
import re
import tomllib
from urllib.parse import urlsplit

import pytest
from deploytools import (
    DOCKER,
    K8S,
    ROOT,
    SETTINGS_ENV,
    SHARED_MOUNTS,
    compose,
    dockerfile_stages,
    entrypoint_command,
    env_example,
    manifest,
    manifests,
    pod_specs,
    service_env,
)

from bckd.tracking.login import LOGIN_ENV

OURS = ("Deployment/api", "Deployment/mlflow", "RayCluster/bckd/head", "RayCluster/bckd/gpu")
RAY_PODS = ("RayCluster/bckd/head", "RayCluster/bckd/gpu")


def _containers(pod: str) -> list[dict]:
    return pod_specs()[pod]["containers"]


def _env(container: dict) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def _secret_refs(container: dict) -> list[str]:
    return [e["secretRef"]["name"] for e in container.get("envFrom", []) if "secretRef" in e]


def _pod_env(container: dict) -> dict[str, str]:
    """The container's environment: its secrets (made from docker/env/<name>.env), then ``env``."""
    env: dict[str, str] = {}
    for secret in _secret_refs(container):
        env.update(env_example(secret.removeprefix("bckd-")))
    return {**env, **_env(container)}


def test_kustomization_lists_every_manifest_and_names_the_image():
    (kustomization,) = [d for d in manifests() if d["kind"] == "Kustomization"]
    files = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(kustomization["resources"]) == files
    assert [i["name"] for i in kustomization["images"]] == ["bckd"]
    for pod in OURS:
        assert [c["image"] for c in _containers(pod)] == ["bckd"], pod


def test_every_manifest_has_kind_apiversion_and_name():
    for d in manifests():
        assert d.get("apiVersion") and d.get("kind"), d
        if d["kind"] != "Kustomization":
            assert d["metadata"]["name"], d


def test_raycluster_head_runs_no_training_and_the_gpu_group_scales_to_zero():
    rc = manifest("RayCluster", "bckd")["spec"]
    pins = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    ray_pin = next(p for p in pins if p.startswith("ray[")).split("==")[1]
    assert rc["rayVersion"] == ray_pin
    assert rc["enableInTreeAutoscaling"] is True
    assert rc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    (gpu,) = rc["workerGroupSpecs"]
    assert gpu["minReplicas"] == 0 and gpu["replicas"] == 0 and gpu["maxReplicas"] >= 1
    limits = gpu["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["nvidia.com/gpu"] == 1


def test_the_api_knows_the_worker_groups_and_accepts_a_cpu_job(monkeypatch):
    from bckd.runtime.cluster import Capacity, WorkerResources, check_resources
    from service.settings import Settings

    rc = manifest("RayCluster", "bckd")["spec"]
    declared = []
    for group in rc["workerGroupSpecs"]:
        limits = group["template"]["spec"]["containers"][0]["resources"]["limits"]
        declared.append({"name": group["groupName"], "cpus": float(limits["cpu"]),
                         "gpus": float(limits.get("nvidia.com/gpu", 0)),
                         "max_replicas": group["maxReplicas"]})
    (api,) = _containers("Deployment/api")
    monkeypatch.setenv("BCKD_WORKER_GROUPS", _env(api)["BCKD_WORKER_GROUPS"])
    settings = Settings()
    assert [g.model_dump() for g in settings.worker_groups] == declared
    # the cluster as it starts: the head alone, with no CPU for workers
    head = {"CPU": float(rc["headGroupSpec"]["rayStartParams"]["num-cpus"])}
    capacity = Capacity((head,), settings.node_groups())
    assert check_resources(WorkerResources(1, 1), capacity) is False  # waits, not refused
    assert check_resources(WorkerResources(2, 4, 1), capacity) is False


@pytest.mark.parametrize("pod", RAY_PODS)
def test_every_ray_node_and_the_autoscaler_get_the_ray_token(pod):
    (container,) = _containers(pod)
    assert "bckd-ray" in _secret_refs(container)
    autoscaler = manifest("RayCluster", "bckd")["spec"]["autoscalerOptions"]
    assert "bckd-ray" in [e["secretRef"]["name"] for e in autoscaler["envFrom"]]
    assert env_example("ray")["RAY_AUTH_MODE"] == "token"


def test_the_api_holds_the_mlflow_admin_login():
    (mlflow,) = _containers("Deployment/mlflow")
    server = _pod_env(mlflow)
    (api,) = _containers("Deployment/api")
    assert [_pod_env(api)[k] for k in LOGIN_ENV] == [
        server["MLFLOW_AUTH_ADMIN_USERNAME"], server["MLFLOW_AUTH_ADMIN_PASSWORD"]]


@pytest.mark.parametrize("pod", RAY_PODS)
def test_no_ray_pod_nor_the_autoscaler_has_an_mlflow_login(pod):
    """Job drivers and Train workers log with their owner's login, from the job's submission
    (``service.core.jobs.driver_env``), never with one of the pod's own."""
    (container,) = _containers(pod)
    autoscaler = manifest("RayCluster", "bckd")["spec"]["autoscalerOptions"]
    (mlflow,) = _containers("Deployment/mlflow")
    password = _pod_env(mlflow)["MLFLOW_AUTH_ADMIN_PASSWORD"]
    for env in (_pod_env(container), _pod_env(autoscaler)):
        assert not set(LOGIN_ENV) & set(env), pod
        assert not [k for k, v in env.items() if v and password in v], pod


def test_the_mlflow_pod_grants_nothing_by_default(tmp_path):
    (mlflow,) = _containers("Deployment/mlflow")
    assert mlflow["args"] == ["mlflow"]
    env = _pod_env(mlflow)
    assert "MLFLOW_AUTH_CONFIG_PATH" not in env  # MLflow reads the ini the entrypoint writes
    ini = tmp_path / "basic-auth.ini"
    entrypoint_command("mlflow", MLFLOW_AUTH_CONFIG_PATH=str(ini), **env)
    config = configparser.ConfigParser()
    config.read(ini)
    assert config["mlflow"]["default_permission"] == "NO_PERMISSIONS"


@pytest.mark.parametrize("pod", list(pod_specs()))
def test_every_secret_a_pod_reads_is_made_from_a_committed_env_example(pod):
    # docs/DEPLOY.md: kubectl create secret generic bckd-<name> \
    #     --from-env-file docker/env/<name>.env
    for container in _containers(pod):
        for secret in _secret_refs(container):
            name = secret.removeprefix("bckd-")
            assert (DOCKER / "env" / f"{name}.env.example").is_file(), (pod, secret)
    deploy = (ROOT / "docs" / "DEPLOY.md").read_text()
    for container in _containers(pod):
        for secret in _secret_refs(container):
            name = secret.removeprefix("bckd-")
            assert f"{secret} --from-env-file docker/env/{name}.env" in deploy, secret


@pytest.mark.parametrize("pod", OURS)
def test_our_pods_run_as_the_image_user(pod):
    runtime = dockerfile_stages()[-1]
    uid = next(line.split("=")[1] for line in runtime["lines"] if line.startswith("ARG UID="))
    ctx = pod_specs()[pod]["securityContext"]
    assert ctx["runAsNonRoot"] is True and str(ctx["runAsUser"]) == uid


@pytest.mark.parametrize("pod", ["Deployment/api", *RAY_PODS])
def test_the_api_and_ray_pods_mount_the_shared_paths_as_compose_does(pod):
    (container,) = _containers(pod)
    mounts = {m["mountPath"] for m in container["volumeMounts"] if m["name"] == "shared"}
    assert mounts == SHARED_MOUNTS
    claims = {v["persistentVolumeClaim"]["claimName"] for v in pod_specs()[pod]["volumes"]
              if "persistentVolumeClaim" in v}
    pvc = manifest("PersistentVolumeClaim", "bckd-shared")
    assert claims == {"bckd-shared"} and pvc["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.parametrize("pod", RAY_PODS)
def test_ray_pods_get_a_memory_backed_dev_shm(pod):
    (container,) = _containers(pod)
    assert "/dev/shm" in {m["mountPath"] for m in container["volumeMounts"]}
    dshm = [v for v in pod_specs()[pod]["volumes"] if v["name"] == "dshm"]
    assert dshm and dshm[0]["emptyDir"]["medium"] == "Memory"


def test_every_service_routes_to_a_named_container_port_of_its_pods():
    for svc in [d for d in manifests() if d["kind"] == "Service"]:
        pods = [d for d in manifests() if d["kind"] in ("Deployment", "StatefulSet")
                and d["spec"]["template"]["metadata"]["labels"].items()
                >= svc["spec"]["selector"].items()]
        assert len(pods) == 1, svc["metadata"]["name"]
        ports = {p["name"]: p["containerPort"]
                 for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        for port in svc["spec"]["ports"]:
            assert ports[port["targetPort"]] == port["port"], svc["metadata"]["name"]


def test_the_api_env_matches_compose_except_where_the_ray_head_lives():
    (api,) = _containers("Deployment/api")
    k8s, dc = _env(api), service_env("api")
    assert set(k8s) <= SETTINGS_ENV
    bckd_compose = {k: v for k, v in dc.items() if k.startswith("BCKD_")}
    from_secret = {k for k in env_example("api") if k.startswith("BCKD_")}
    # compose's Ray nodes are static: only KubeRay has worker groups that an autoscaler grows
    k8s_only = {"BCKD_WORKER_GROUPS"}
    assert set(k8s) - k8s_only | from_secret == set(bckd_compose)
    for key in set(k8s) - {"BCKD_RAY_ADDRESS"} - k8s_only:
        assert re.sub(r"\$\{[A-Z_]+:?-([^}]*)\}", r"\1", bckd_compose[key]) == k8s[key], key
    # KubeRay names the head's Service <cluster>-head-svc; its dashboard port is 8265.
    ray = urlsplit(k8s["BCKD_RAY_ADDRESS"])
    assert ray.hostname == f"{manifest('RayCluster', 'bckd')['metadata']['name']}-head-svc"
    (head,) = _containers("RayCluster/bckd/head")
    assert ray.port in {p["containerPort"] for p in head["ports"] if p["name"] == "dashboard"}
    mlflow = urlsplit(k8s["BCKD_MLFLOW_URI"])
    svc = manifest("Service", mlflow.hostname)
    assert mlflow.port in [p["port"] for p in svc["spec"]["ports"]]


def test_env_files_name_hosts_that_exist_as_services_in_both_deployments():
    hosts = {"postgres": 5432, "minio": 9000, "mlflow": 5000}
    for name, port in hosts.items():
        svc = manifest("Service", name)
        assert [p["port"] for p in svc["spec"]["ports"]] == [port]
    assert set(hosts) <= set(compose()["services"])
    urls = [env_example("api")["BCKD_DATABASE_URL"], env_example("s3")["AWS_ENDPOINT_URL"],
            env_example("mlflow")["MLFLOW_BACKEND_STORE_URI"]]
    for url in urls:
        u = urlsplit(url)
        assert hosts[u.hostname] == u.port, url


@pytest.mark.parametrize("pod", OURS)
def test_probes_call_roles_the_entrypoint_knows(pod):
    (container,) = _containers(pod)
    for probe in ("readinessProbe", "livenessProbe"):
        spec = container[probe]
        if "exec" in spec:
            cmd = spec["exec"]["command"]
            assert cmd[:2] == ["/app/docker/entrypoint.sh", "healthcheck"]
            assert cmd[2] in ("ray-head", "ray-worker", "api", "mlflow")

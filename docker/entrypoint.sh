#!/usr/bin/env bash
# The image's entrypoint: one image, four roles (plus any command, e.g. `bckd train ...`).
#
#   entrypoint.sh ray-head | ray-worker | api | mlflow     start that role in the foreground
#   entrypoint.sh healthcheck ROLE                          exit 0 when ROLE answers on loopback
#   entrypoint.sh bckd train configs/synth/gfl_teacher.py  anything else is exec'd as given
#
# ENTRYPOINT_DRY_RUN=1 prints the command a role would run instead of running it (tests).
# Ports are fixed inside the container (publish or map them outside): API 8000, Ray GCS 6379,
# dashboard + Jobs API 8265, dashboard agent 52365, Ray client 10001, MLflow 5000.
set -euo pipefail

API_PORT=8000
GCS_PORT=6379
DASHBOARD_PORT=8265
# Two Ray nodes in one network namespace (host networking, or containers sharing one) cannot
# both listen on 52365: NODE_DASHBOARD_AGENT_PORT gives the second node another port.
AGENT_PORT=${NODE_DASHBOARD_AGENT_PORT:-52365}
CLIENT_PORT=10001
MLFLOW_PORT=5000

die() { echo "entrypoint: $*" >&2; exit 64; }

run() {
    if [[ -n "${ENTRYPOINT_DRY_RUN:-}" ]]; then
        printf '%q ' "$@"; echo
        exit 0
    fi
    exec "$@"
}

# An open Ray dashboard runs anyone's code (ShadowRay, 2024): no Ray node starts without token
# auth and a token (RAY_AUTH_TOKEN, or a non-empty file at RAY_AUTH_TOKEN_PATH).
require_ray_token() {
    [[ "${RAY_AUTH_MODE:-}" == "token" ]] || die "RAY_AUTH_MODE must be 'token' (got '${RAY_AUTH_MODE:-}')"
    if [[ -z "${RAY_AUTH_TOKEN:-}" ]]; then
        [[ -n "${RAY_AUTH_TOKEN_PATH:-}" && -s "${RAY_AUTH_TOKEN_PATH}" ]] \
            || die "set RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH (a non-empty file)"
    fi
}

# NODE_NUM_CPUS / NODE_NUM_GPUS / NODE_OBJECT_STORE_BYTES: empty lets Ray detect them (it reads
# the container's cgroup limits).
node_resources() {
    local -n out=$1
    [[ -n "${NODE_NUM_CPUS:-}" ]] && out+=(--num-cpus "$NODE_NUM_CPUS")
    [[ -n "${NODE_NUM_GPUS:-}" ]] && out+=(--num-gpus "$NODE_NUM_GPUS")
    [[ -n "${NODE_OBJECT_STORE_BYTES:-}" ]] && out+=(--object-store-memory "$NODE_OBJECT_STORE_BYTES")
    return 0
}

ray_head() {
    require_ray_token
    local argv=(ray start --head --block --disable-usage-stats
                --port "$GCS_PORT" --ray-client-server-port "$CLIENT_PORT"
                --dashboard-host 0.0.0.0 --dashboard-port "$DASHBOARD_PORT"
                --dashboard-agent-listen-port "$AGENT_PORT"
                --include-dashboard true)
    # The head runs job drivers and Train controllers (0 CPUs each); training goes to workers.
    NODE_NUM_CPUS=${NODE_NUM_CPUS-0}
    node_resources argv
    run "${argv[@]}"
}

ray_worker() {
    require_ray_token
    local argv=(ray start --block --disable-usage-stats
                --address "${NODE_HEAD_ADDRESS:-ray-head:$GCS_PORT}"
                --dashboard-agent-listen-port "$AGENT_PORT")
    node_resources argv
    run "${argv[@]}"
}

api() {
    require_ray_token  # the API's JobSubmissionClient sends the token to the dashboard
    run uvicorn service.main:app --host 0.0.0.0 --port "$API_PORT" --log-level info
}

mlflow_server() {
    : "${MLFLOW_BACKEND_STORE_URI:?set MLFLOW_BACKEND_STORE_URI (postgresql://...)}"
    : "${MLFLOW_ARTIFACTS_DESTINATION:?set MLFLOW_ARTIFACTS_DESTINATION (s3://bucket/path)}"
    : "${MLFLOW_AUTH_DATABASE_URI:?set MLFLOW_AUTH_DATABASE_URI (the basic-auth user store)}"
    : "${MLFLOW_AUTH_ADMIN_PASSWORD:?set MLFLOW_AUTH_ADMIN_PASSWORD}"
    # The basic-auth app reads its settings from an ini file; the admin name and password come
    # from MLFLOW_AUTH_ADMIN_USERNAME / MLFLOW_AUTH_ADMIN_PASSWORD, which MLflow reads itself.
    # No default permission: a login sees only what it was granted. The API holds the admin
    # login and grants each owner's login its own experiments (service/adapters/mlflow_users.py);
    # any other default would show every owner's runs to every login.
    local ini=${MLFLOW_AUTH_CONFIG_PATH:-/tmp/mlflow-basic-auth.ini}
    (umask 077 && cat >"$ini" <<EOF
[mlflow]
default_permission = NO_PERMISSIONS
database_uri = ${MLFLOW_AUTH_DATABASE_URI}
admin_username = ${MLFLOW_AUTH_ADMIN_USERNAME:-_bckd}
authorization_function = mlflow.server.auth:authenticate_request_basic_auth
EOF
    )
    export MLFLOW_AUTH_CONFIG_PATH=$ini
    # Buckets the stack writes to (MLflow artifacts, Ray Train checkpoints), created if absent.
    if [[ -n "${S3_BUCKETS:-}" && -z "${ENTRYPOINT_DRY_RUN:-}" ]]; then
        python - "$S3_BUCKETS" <<'PY'
import sys

import boto3
import botocore.exceptions

s3 = boto3.client("s3")  # endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ...
for bucket in sys.argv[1].split():
    try:
        s3.head_bucket(Bucket=bucket)
    except botocore.exceptions.ClientError:
        s3.create_bucket(Bucket=bucket)
        print(f"entrypoint: created bucket {bucket}", flush=True)
PY
    fi
    # --allowed-hosts: MLflow refuses Host headers other than localhost and private IPs
    # (DNS-rebinding guard); the stack reaches it by service name.
    run mlflow server --app-name basic-auth --host 0.0.0.0 --port "$MLFLOW_PORT" \
        --workers "${MLFLOW_WORKERS:-2}" \
        --backend-store-uri "$MLFLOW_BACKEND_STORE_URI" \
        --artifacts-destination "$MLFLOW_ARTIFACTS_DESTINATION" --serve-artifacts \
        --allowed-hosts "${MLFLOW_ALLOWED_HOSTS:-mlflow,mlflow:$MLFLOW_PORT,localhost,localhost:$MLFLOW_PORT,127.0.0.1:$MLFLOW_PORT}"
}

# Unauthenticated health endpoints, on loopback inside the container.
healthcheck() {
    local url
    case "${1:-}" in
        ray-head) url="http://127.0.0.1:$DASHBOARD_PORT/api/gcs_healthz" ;;
        ray-worker) url="http://127.0.0.1:$AGENT_PORT/api/local_raylet_healthz" ;;
        api) url="http://127.0.0.1:$API_PORT/v1/health" ;;
        mlflow) url="http://127.0.0.1:$MLFLOW_PORT/health" ;;
        *) die "healthcheck: unknown role '${1:-}'" ;;
    esac
    run python -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' "$url"
}

case "${1:-api}" in
    ray-head) ray_head ;;
    ray-worker) ray_worker ;;
    api) api ;;
    mlflow) mlflow_server ;;
    healthcheck) healthcheck "${2:-}" ;;
    *) exec "$@" ;;
esac

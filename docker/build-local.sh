#!/usr/bin/env bash
# Item 6 of issue 8, "images for real", on a machine that reaches Debian's and PyPI's mirrors but
# no image registry: make a Debian bookworm base image with debootstrap, build the CPU image from
# it, start MLflow, a Ray head, a Ray worker and the API from that image in one network namespace
# (loopback only), run one small training job through the API, tear everything down.
# Not part of the test command; run as root from anywhere:
#
#   docker/build-local.sh                 # all steps: base build up job down
#   docker/build-local.sh base build      # some of them (each is idempotent)
#   KEEP=1 docker/build-local.sh          # leave the containers and dockerd running at the end
#
# Settings (environment): WORK (scratch dir, /var/tmp/bckd-local), IMAGE (bckd:cpu),
# BASE_IMAGE (bckd-base:bookworm), MIRROR (http://deb.debian.org/debian), TORCH_WHEEL and
# MMCV_WHEEL_FILE (prebuilt wheels copied into docker/wheels/ for this build; MMCV_WHEEL_FILE=""
# compiles mmcv in the image instead, ~10+ min), TORCH_INDEX_URL (https://pypi.org/simple: the
# PyTorch index is out of reach here, the torch+cpu wheel comes from docker/wheels/).
# dockerd is started (niced) if none runs, and stopped by `down` if this script started it.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
WORK=${WORK:-/var/tmp/bckd-local}
DOCKER=${DOCKER:-/usr/bin/docker}   # Debian's docker.io client (a newer static CLI needs buildx)
IMAGE=${IMAGE:-bckd:cpu}
BASE_IMAGE=${BASE_IMAGE:-bckd-base:bookworm}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
TORCH_WHEEL=${TORCH_WHEEL-/opt/wheels/torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl}
MMCV_WHEEL_FILE=${MMCV_WHEEL_FILE-$HOME/.cache/bckd/wheels/mmcv-2.1.0_torch-2.13.0_cp311/mmcv-2.1.0-cp311-cp311-linux_x86_64.whl}
TORCH_INDEX_URL=${TORCH_INDEX_URL:-https://pypi.org/simple}
NET=bckd-local-net              # the container whose network namespace (loopback only) all share
NAMES=(bckd-local-api bckd-local-worker bckd-local-head bckd-local-mlflow "$NET")
D=(nice -n 10 "$DOCKER")

step() { printf '\n=== [%(%H:%M:%S)T] %s\n' -1 "$*"; }
say() { printf '    %s\n' "$*"; }
timed() { local t0=$SECONDS; "$@"; say "took $((SECONDS - t0)) s"; }
[[ $(id -u) == 0 ]] || { echo "run as root (debootstrap, dockerd)" >&2; exit 1; }
mkdir -p "$WORK"

ensure_dockerd() {
    if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
        step "apt-get install docker.io debootstrap"
        DEBIAN_FRONTEND=noninteractive nice -n 10 apt-get install -y --no-install-recommends \
            docker.io debootstrap
    fi
    if "$DOCKER" info >/dev/null 2>&1; then return; fi
    step "start dockerd (nice 10; log $WORK/dockerd.log)"
    nice -n 10 dockerd >"$WORK/dockerd.log" 2>&1 &
    echo $! >"$WORK/dockerd.pid"
    for _ in $(seq 60); do "$DOCKER" info >/dev/null 2>&1 && break; sleep 1; done
    "$DOCKER" info >/dev/null 2>&1 || { tail -20 "$WORK/dockerd.log"; exit 1; }
    say "dockerd pid $(cat "$WORK/dockerd.pid"), $("$DOCKER" version --format '{{.Server.Version}}')"
}

do_base() {
    step "base image $BASE_IMAGE: debootstrap bookworm (minbase) + this host's extra CAs"
    if "$DOCKER" image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
        say "exists, kept (docker rmi $BASE_IMAGE to remake it)"; return
    fi
    local rootfs=$WORK/rootfs
    if [[ ! -e $rootfs/.bckd-debootstrap-done ]]; then
        rm -rf "$rootfs"
        # No python3.11 here: the Dockerfile installs python3.11 (-dev, -venv) from apt when the
        # base has none; a base with a bare python3.11 would skip -venv and -dev.
        timed nice -n 10 debootstrap --variant=minbase --include=ca-certificates \
            bookworm "$rootfs" "$MIRROR" >"$WORK/debootstrap.log"
        touch "$rootfs/.bckd-debootstrap-done"
    fi
    # TLS to PyPI goes through this machine's intercepting proxy: trust the CAs the host added
    # (/usr/local/share/ca-certificates), and point pip/requests at the system bundle.
    local n=0
    for crt in /usr/local/share/ca-certificates/*.crt; do
        [[ -e $crt ]] || continue
        cp "$crt" "$rootfs/usr/local/share/ca-certificates/"; n=$((n + 1))
    done
    chroot "$rootfs" update-ca-certificates >/dev/null
    say "$n extra CA certificate(s) from /usr/local/share/ca-certificates"
    rm -f "$rootfs/.bckd-debootstrap-done"
    tar -C "$rootfs" -c . | "$DOCKER" import \
        --change 'ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt' \
        --change 'CMD ["/bin/bash"]' - "$BASE_IMAGE" >/dev/null
    touch "$rootfs/.bckd-debootstrap-done"
    say "$("$DOCKER" image ls "$BASE_IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}')"
}

do_build() {
    step "build $IMAGE from docker/Dockerfile (BUILD_IMAGE=BASE_IMAGE=$BASE_IMAGE)"
    local args=(--build-arg "BUILD_IMAGE=$BASE_IMAGE" --build-arg "BASE_IMAGE=$BASE_IMAGE"
                --build-arg "TORCH_INDEX_URL=$TORCH_INDEX_URL" --build-arg MAX_JOBS=2)
    rm -f "$ROOT"/docker/wheels/*.whl
    if [[ -n $TORCH_WHEEL ]]; then
        cp "$TORCH_WHEEL" "$ROOT/docker/wheels/"; say "docker/wheels/ <- $TORCH_WHEEL"
    fi
    if [[ -n $MMCV_WHEEL_FILE ]]; then
        cp "$MMCV_WHEEL_FILE" "$ROOT/docker/wheels/"; say "docker/wheels/ <- $MMCV_WHEEL_FILE"
        args+=(--build-arg "MMCV_WHEEL=$(basename "$MMCV_WHEEL_FILE")")
    else
        say "mmcv is compiled in the build stage (MAX_JOBS=2)"
    fi
    say "docker build ${args[*]} -f docker/Dockerfile -t $IMAGE ."
    local t0=$SECONDS
    (cd "$ROOT" && DOCKER_BUILDKIT=1 "${D[@]}" build --progress=plain "${args[@]}" \
        -f docker/Dockerfile -t "$IMAGE" . 2>&1 | tee "$WORK/build.log" \
        | awk '/^#[0-9]+ \[/ && !seen[$1]++ {print "    " substr($0, 1, 110); fflush()}
               /^#[0-9]+ (DONE|CACHED|ERROR)|^ERROR/ {print "    " $0; fflush()}')
    say "build took $((SECONDS - t0)) s (full log: $WORK/build.log)"
    rm -f "$ROOT"/docker/wheels/*.whl
    say "$("$DOCKER" image ls "$IMAGE" --format '{{.Repository}}:{{.Tag}} {{.Size}}')"
}

# --- up / job / down ----------------------------------------------------------------------
# Where the containers talk: NETMODE=shared (default) puts all of them in the network namespace
# of one holder container started with --network none, so everything listens on a loopback of its
# own (host networking on a machine with nothing else on it); NETMODE=host uses the host's network
# (needs 127.0.0.1:8000, 8265, 6379, 10001, 5000, 52365, 52366 free: the entrypoint's ports).
NETMODE=${NETMODE:-shared}
PORTS=(8000 8265 6379 10001 5000 52365 52366)

net_args() {
    if [[ $NETMODE == host ]]; then echo --network host; else echo "--network container:$NET"; fi
}

secret() { python3 -c 'import secrets; print(secrets.token_urlsafe(24))'; }

wait_healthy() {  # NAME ROLE SECONDS
    local t0=$SECONDS
    while ! "$DOCKER" exec "$1" /app/docker/entrypoint.sh healthcheck "$2" >/dev/null 2>&1; do
        if [[ $("$DOCKER" inspect -f '{{.State.Running}}' "$1") != true ]] \
            || ((SECONDS - t0 > $3)); then
            say "$1 did not become healthy; its log:"
            "$DOCKER" logs --tail 40 "$1" 2>&1 | sed 's/^/      /'
            return 1
        fi
        sleep 2
    done
    say "$1 healthy after $((SECONDS - t0)) s"
}

do_up() {
    step "start MLflow, Ray head, Ray worker and the API from $IMAGE (NETMODE=$NETMODE)"
    "$DOCKER" image inspect "$IMAGE" >/dev/null
    do_stop_containers
    if [[ $NETMODE == host ]]; then
        for p in "${PORTS[@]}"; do
            if ss -Hltn "sport = :$p" | grep -q .; then
                echo "port $p is taken on this host; use NETMODE=shared" >&2; exit 1
            fi
        done
    fi
    # Secrets, made once and kept in $WORK/secrets.env (mode 0600).
    if [[ ! -s $WORK/secrets.env ]]; then
        (umask 077 && printf 'RAY_AUTH_TOKEN=%s\nMLFLOW_PASSWORD=%s\nADMIN_TOKEN=%s\n' \
            "$(secret)" "$(secret)" "$(secret)" >"$WORK/secrets.env")
    fi
    if ! grep -q '^MLFLOW_SECRET_KEY=' "$WORK/secrets.env"; then
        echo "MLFLOW_SECRET_KEY=$(secret)" >>"$WORK/secrets.env"
    fi
    # shellcheck disable=SC1091
    source "$WORK/secrets.env"
    local token_sha
    token_sha=$(printf %s "$ADMIN_TOKEN" | sha256sum | cut -d' ' -f1)
    # Host directories the containers (uid 1000) share: data sets, work dirs (checkpoints), the
    # service's state, MLflow's store.
    mkdir -p "$WORK"/{data,work_dirs,state,mlflow}
    if [[ ! -e $WORK/data/synth/.done ]]; then
        say "synthetic data set: 16 train / 8 val images, 128 px -> $WORK/data/synth"
        rm -rf "$WORK/data/synth"
        nice -n 10 "$ROOT/.venv/bin/bckd" data synth --out "$WORK/data/synth" \
            --num-train 16 --num-val 8 --image-size 128 >/dev/null
        touch "$WORK/data/synth/.done"
    fi
    chown -R 1000:1000 "$WORK"/{data,work_dirs,state,mlflow}
    local shared=(-v "$WORK/data:/app/data" -v "$WORK/work_dirs:/app/work_dirs"
                  -v "$WORK/state:/var/lib/bckd")
    local ray_env=(-e "RAY_AUTH_TOKEN=$RAY_AUTH_TOKEN")
    # MLflow's admin login: the API's alone; Ray nodes get none (each job brings its owner's).
    local mlflow_admin=(-e MLFLOW_TRACKING_USERNAME=_bckd
                        -e "MLFLOW_TRACKING_PASSWORD=$MLFLOW_PASSWORD")
    local run=("${D[@]}" run -d)
    if [[ $NETMODE == shared ]]; then
        "${run[@]}" --name "$NET" --network none --entrypoint /usr/bin/tini "$IMAGE" \
            -- sleep infinity >/dev/null
        say "$NET: network namespace with loopback only"
    fi
    # shellcheck disable=SC2046
    "${run[@]}" --name bckd-local-mlflow $(net_args) -v "$WORK/mlflow:/var/lib/bckd/mlflow" \
        -e MLFLOW_BACKEND_STORE_URI=sqlite:////var/lib/bckd/mlflow/mlflow.db \
        -e MLFLOW_ARTIFACTS_DESTINATION=/var/lib/bckd/mlflow/artifacts \
        -e MLFLOW_AUTH_DATABASE_URI=sqlite:////var/lib/bckd/mlflow/auth.db \
        -e MLFLOW_AUTH_ADMIN_USERNAME=_bckd -e "MLFLOW_AUTH_ADMIN_PASSWORD=$MLFLOW_PASSWORD" \
        -e "MLFLOW_FLASK_SERVER_SECRET_KEY=$MLFLOW_SECRET_KEY" \
        -e MLFLOW_WORKERS=1 "$IMAGE" mlflow >/dev/null
    wait_healthy bckd-local-mlflow mlflow 240
    # shellcheck disable=SC2046
    "${run[@]}" --name bckd-local-head $(net_args) --shm-size 512m "${shared[@]}" "${ray_env[@]}" \
        -e NODE_OBJECT_STORE_BYTES=200000000 "$IMAGE" ray-head >/dev/null
    wait_healthy bckd-local-head ray-head 240
    # shellcheck disable=SC2046
    "${run[@]}" --name bckd-local-worker $(net_args) --shm-size 512m "${shared[@]}" "${ray_env[@]}" \
        -e NODE_HEAD_ADDRESS=127.0.0.1:6379 -e NODE_DASHBOARD_AGENT_PORT=52366 \
        -e NODE_NUM_CPUS=1 -e NODE_OBJECT_STORE_BYTES=200000000 "$IMAGE" ray-worker >/dev/null
    wait_healthy bckd-local-worker ray-worker 240
    # shellcheck disable=SC2046
    "${run[@]}" --name bckd-local-api $(net_args) "${shared[@]}" "${ray_env[@]}" \
        "${mlflow_admin[@]}" -e BCKD_RAY_ADDRESS=http://127.0.0.1:8265 \
        -e BCKD_MLFLOW_URI=http://127.0.0.1:5000 -e "BCKD_TOKENS=$token_sha admin admin" \
        -e 'BCKD_DATA_ROOTS=["/app/data", "/app/work_dirs"]' "$IMAGE" api >/dev/null
    wait_healthy bckd-local-api api 240
    say "running: $("$DOCKER" ps --filter name=bckd-local --format '{{.Names}}' | tr '\n' ' ')"
    say "Ray nodes (ip, CPUs): $("$DOCKER" exec bckd-local-head python -c 'import ray
ray.init(address="auto", logging_level="ERROR")
print([(n["NodeManagerAddress"], n["Resources"].get("CPU", 0)) for n in ray.nodes() if n["Alive"]])' 2>/dev/null | tail -1)"
    # Closed to strangers: the API, the Ray dashboard and MLflow answer 401 without credentials.
    local codes
    codes=$("$DOCKER" exec bckd-local-api python -c 'import sys, urllib.request, urllib.error
for url in sys.argv[1:]:
    try:
        print(urllib.request.urlopen(url, timeout=5).status, end=" ")
    except urllib.error.HTTPError as e:
        print(e.code, end=" ")' \
        http://127.0.0.1:8000/v1/jobs http://127.0.0.1:8265/api/jobs/ \
        http://127.0.0.1:5000/api/2.0/mlflow/experiments/search)
    say "no credentials: API /v1/jobs, Ray /api/jobs/, MLflow search -> $codes(want 401 401 401)"
}

do_job() {
    step "one job through the API: train synth/gfl_teacher, max_epochs=1, 16/8 images at 128 px"
    # shellcheck disable=SC1091
    source "$WORK/secrets.env"
    local t0=$SECONDS name
    name="local_gfl_teacher_$(date +%H%M%S)"
    # The client is this checkout's `bckd jobs` (.venv), run in the containers' network namespace:
    # the image's own `bckd jobs` needs httpx, which pyproject lists only under [dev].
    local jobs=(env "BCKD_TOKEN=$ADMIN_TOKEN" "$ROOT/.venv/bin/bckd" jobs --url http://127.0.0.1:8000)
    if [[ $NETMODE == shared ]]; then
        jobs=(nsenter -t "$("$DOCKER" inspect -f '{{.State.Pid}}' "$NET")" -n "${jobs[@]}")
    fi
    "${jobs[@]}" submit train synth/gfl_teacher --data-root /app/data/synth \
        --set train_cfg.max_epochs=1 --name "$name" --follow 2>&1 | tee "$WORK/job.log" | tail -25
    say "job took $((SECONDS - t0)) s (log: $WORK/job.log)"
    "${jobs[@]}" list --limit 3 2>&1 | sed 's/^/    /'
    say "work dir: $(find "$WORK/work_dirs/$name" -maxdepth 1 2>/dev/null | head -8 | tr '\n' ' ')"
}

do_stop_containers() {
    local n
    for n in "${NAMES[@]}"; do
        if "$DOCKER" inspect "$n" >/dev/null 2>&1; then
            "$DOCKER" rm -f "$n" >/dev/null; say "removed $n"
        fi
    done
}

do_down() {
    step "teardown"
    if [[ -n ${KEEP:-} ]]; then say "KEEP set: containers and dockerd left running"; return; fi
    do_stop_containers
    if [[ -s $WORK/dockerd.pid ]] && kill -0 "$(cat "$WORK/dockerd.pid")" 2>/dev/null; then
        local pid
        pid=$(cat "$WORK/dockerd.pid")
        kill "$pid"
        for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
        rm -f "$WORK/dockerd.pid"
        say "stopped dockerd (pid $pid); the images stay in /var/lib/docker"
    fi
}

main() {
    local steps=("$@")
    [[ ${#steps[@]} -gt 0 ]] || steps=(base build up job down)
    ensure_dockerd
    for s in "${steps[@]}"; do
        case $s in
            base) do_base ;;
            build) do_build ;;
            up) do_up ;;
            job) do_job ;;
            down) do_down ;;
            *) echo "unknown step $s (base build up job down)" >&2; exit 64 ;;
        esac
    done
}

main "$@"; exit  # one line: edits to this file while it runs do not reach bash

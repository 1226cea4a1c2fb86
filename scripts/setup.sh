#!/usr/bin/env bash
# Idempotent set-up of the pinned stack in ./.venv.
#
#   scripts/setup.sh            # create or complete .venv; a no-op when already done
#   BCKD_FORCE_SETUP=1 scripts/setup.sh   # reinstall the project even if the stamp is current
#
# Order matters: torch first (mmcv's build compiles against it), then mmcv 2.1.0 from source
# (only its source is published for these pins), then the project with its dev extras.
# The mmcv wheel is cached outside the checkout, keyed by mmcv, torch and Python versions,
# so a second set-up on the same machine takes about a minute instead of ~10.
set -euo pipefail

cd "$(dirname "$0")/.."
ROOT=$(pwd)
PYTHON=${PYTHON:-python3.11}
VENV="$ROOT/.venv"
TORCH_VERSION=2.13.0
MMCV_VERSION=2.1.0
# mmcv's setup.py imports pkg_resources (removed in setuptools 81); torch needs >=77.0.3.
SETUPTOOLS_SPEC="setuptools>=77.0.3,<81"
CACHE_DIR=${BCKD_WHEEL_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/bckd/wheels}
MMCV_CACHE="$CACHE_DIR/mmcv-${MMCV_VERSION}_torch-${TORCH_VERSION}_cp311"
STAMP="$VENV/.bckd-setup"

log() { printf '[setup %s] %s\n' "$(date +%H:%M:%S)" "$*"; }

# Headless Chromium renders the API's docs pages in tests/service/test_docs_offline.py. Checked
# before the stamp, so a machine whose .venv is current still gets it; `command -v` when present.
if ! command -v chromium >/dev/null; then
    log "installing chromium (apt) for the docs test"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
fi

# bubblewrap is the jobs' sandbox in `bckd serve` (service/stack/sandbox.py): without it the stack
# refuses to start unless BCKD_JOB_SANDBOX=off. Checked before the stamp, like chromium.
if ! command -v bwrap >/dev/null; then
    log "installing bubblewrap (apt) for the jobs' sandbox"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q bubblewrap >/dev/null
fi

# The stamp holds a hash of pyproject.toml and this script: any change re-runs the install.
want_stamp=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want_stamp" && -z "${BCKD_FORCE_SETUP:-}" ]]; then
    exit 0
fi

command -v "$PYTHON" >/dev/null || { echo "setup: $PYTHON not found; set PYTHON=/path/to/python3.11" >&2; exit 1; }
if [[ ! -x "$VENV/bin/python" ]]; then
    log "creating $VENV with $($PYTHON --version)"
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)

log "installing build tools ($SETUPTOOLS_SPEC, wheel)"
"${PIP[@]}" install -q -U pip "$SETUPTOOLS_SPEC" wheel

log "installing torch==$TORCH_VERSION (CPU build here; a CUDA host's index gives the CUDA build)"
"${PIP[@]}" install -q "torch==$TORCH_VERSION" numpy

if ! "$VENV/bin/python" -c "import mmcv.ops" 2>/dev/null; then
    shopt -s nullglob
    wheels=("$MMCV_CACHE"/mmcv-${MMCV_VERSION}-*.whl)
    if (( ${#wheels[@]} == 0 )); then
        log "building mmcv $MMCV_VERSION with compiled ops against torch $TORCH_VERSION"
        log "this takes about 10 minutes on 2 cores (once per machine; cached in $MMCV_CACHE)"
        tmp=$(mktemp -d)
        start=$(date +%s)
        MAX_JOBS=${MAX_JOBS:-$(nproc)} "${PIP[@]}" wheel -q --no-build-isolation --no-deps \
            "mmcv==$MMCV_VERSION" -w "$tmp"
        mkdir -p "$MMCV_CACHE"
        mv "$tmp"/mmcv-*.whl "$MMCV_CACHE"/
        rm -rf "$tmp"
        log "mmcv built in $(( $(date +%s) - start )) s"
        wheels=("$MMCV_CACHE"/mmcv-${MMCV_VERSION}-*.whl)
    else
        log "reusing cached mmcv wheel ${wheels[0]}"
    fi
    "${PIP[@]}" install -q "${wheels[0]}"
fi

log "installing bckd (editable) with dev extras"
"${PIP[@]}" install -q -e ".[dev]"

"$VENV/bin/python" - <<'PY'
import torch
import mmcv.ops
import mmdet.models  # noqa: F401  (fails without mmcv's compiled ops)

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
keep = mmcv.ops.nms(boxes, torch.tensor([0.9, 0.8]), iou_threshold=0.5)[1]
assert keep.tolist() == [0], keep
PY
echo "$want_stamp" > "$STAMP"
log "done: $VENV is ready"

#!/usr/bin/env bash
# The GPU benchmarks at COCO scale on a CUDA host that has PyTorch but neither the OpenMMLab
# stack nor a network: install the bundle that fetch.sh gathered, build mmcv's CUDA ops for this
# GPU alone (timed), then bench_step.py (--setting coco; the teacher in the configs' precision,
# then in bf16) and bench_losses.py. One command, for a GPU lent for minutes.
#
#   benchmarks/cuda/run.sh [OUT_DIR]
#
# Writes benchmarks/results/{step_cuda,step_cuda_bf16,losses_cuda}.json, and copies them, the
# whole log (run.log) and mmcv's build log to OUT_DIR (default: $OUT, else
# benchmarks/results/tmp/cuda). Nothing is installed outside $TMPDIR/bckd-cuda.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BUNDLE=$ROOT/benchmarks/cuda/bundle
OUT_DIR=${1:-${OUT:-$ROOT/benchmarks/results/tmp/cuda}}
WORK=${TMPDIR:-/tmp}/bckd-cuda
PY=${PYTHON:-python3}
REPEATS=${REPEATS:-20}
LIMIT_S=${LIMIT_S:-200}  # per benchmark: a hang must not eat the others' time
mkdir -p "$OUT_DIR" "$WORK"
exec > >(tee "$OUT_DIR/run.log") 2>&1
log() { printf '[cuda %s +%ds] %s\n' "$(date +%H:%M:%S)" "$SECONDS" "$*"; }

log "host: $(nproc) cores, $($PY --version), torch $($PY -c 'import torch; print(torch.__version__)')"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,clocks.max.sm --format=csv || true
shopt -s nullglob
wheels=("$BUNDLE"/*.whl)
(( ${#wheels[@]} )) || { log "no wheels in $BUNDLE: run benchmarks/cuda/fetch.sh first"; exit 1; }
$PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "${wheels[@]}" || exit 1
export PYTHONPATH=$WORK/site:$WORK/mmcv:$ROOT  # the bundle's setuptools (<81) before the host's

arch=$($PY -c 'import torch; print("%d.%d" % torch.cuda.get_device_capability())')
# torch's CUDA headers include cuSPARSE's and cuBLAS's. A toolkit with nvcc alone lacks them;
# torch's own pip dependencies (nvidia-*) carry them: then those go on the include path.
cuda_home=$($PY -c 'from torch.utils.cpp_extension import CUDA_HOME; print(CUDA_HOME or "")')
if [[ ! -f $cuda_home/include/cusparse.h ]]; then
    pip_includes=$($PY -c 'import glob, os, torch
site = os.path.dirname(os.path.dirname(torch.__file__))
found = glob.glob(site + "/nvidia/**/include/cusparse.h", recursive=True)
print(":".join(sorted({os.path.dirname(p) for p in found})))')
    log "no cusparse.h in ${cuda_home:-CUDA_HOME}/include: adding ${pip_includes:-nothing} to CPATH"
    export CPATH=$pip_includes${CPATH:+:$CPATH}
fi
if compgen -G "$WORK/mmcv/mmcv/_ext*.so" >/dev/null; then
    log "reusing mmcv's ops built earlier in $WORK/mmcv (remove it to rebuild)"
else
    log "building mmcv 2.1.0 with CUDA ops for compute capability $arch only, $(nproc) jobs"
    rm -rf "$WORK/mmcv" && mkdir -p "$WORK/mmcv"
    tar xzf "$BUNDLE"/mmcv-2.1.0.tar.gz -C "$WORK/mmcv" --strip-components=1
    start=$SECONDS
    (cd "$WORK/mmcv" && MMCV_WITH_OPS=1 FORCE_CUDA=1 TORCH_CUDA_ARCH_LIST=$arch \
        MAX_JOBS=$(nproc) $PY setup.py build_ext --inplace) > "$OUT_DIR/mmcv_build.log" 2>&1
    rc=$?
    log "mmcv build: exit $rc after $((SECONDS - start)) s (log: mmcv_build.log)"
    if (( rc )); then grep -m 20 -B2 -A8 "error" "$OUT_DIR/mmcv_build.log"; exit $rc; fi
fi
$PY - <<'PY' || exit 1
import torch
from mmcv.ops import nms

boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]], device="cuda")
keep = nms(boxes, torch.tensor([0.9, 0.8], device="cuda"), iou_threshold=0.5)[1]
assert keep.tolist() == [0], keep
print("mmcv.ops.nms on CUDA: ok")
PY

cd "$ROOT"
bench() {  # name, script, args...: its output in run.log, mmengine's per-parameter lines left out
    local name=$1 script=$2
    shift 2
    log "$name: python benchmarks/$script $*"
    timeout "$LIMIT_S" $PY "benchmarks/$script" "$@" --json "benchmarks/results/$name.json" 2>&1 \
        | grep -v "paramwise_options\|Warning\|warnings.warn\|autocast(enabled"
    log "$name: exit ${PIPESTATUS[0]}"
    cp "benchmarks/results/$name.json" "$OUT_DIR/" 2>/dev/null
}
bench step_cuda bench_step.py --setting coco --device cuda --repeats "$REPEATS" --warmup 3
bench losses_cuda bench_losses.py --device cuda --repeats "$REPEATS" --warmup 3
bench step_cuda_bf16 bench_step.py --setting coco --device cuda --repeats "$REPEATS" --warmup 3 \
    --teacher-precision bf16
log "done"

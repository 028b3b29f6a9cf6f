#!/usr/bin/env bash
# Bring the Python environment of mmceformer up to date; idempotent.
#
#   tools/setup_env.sh            # venv in ./.venv (default)
#   MMCEFORMER_VENV=/path/venv tools/setup_env.sh
#   MMCEFORMER_PYTHON=/path/to/your/env/bin/python tools/setup_env.sh
#       -> install into an existing environment instead of creating a venv.
#
# torch: an importable torch is never replaced (a missing torchvision is
# installed to match it); only an environment without torch gets
# $MMCEFORMER_TORCH (default torch 2.14.1 + torchvision 0.29.1).
#
# mmcv 2.1.0 has no wheel on PyPI. An mmcv 2.1.0 with its ops that is
# already installed (e.g. OpenMMLab's prebuilt wheel, `mim install
# mmcv==2.1.0`) is kept. Otherwise it is built once (about 15 minutes on 2
# cores) and the wheel is kept in $MMCEFORMER_CACHE (default
# ~/.cache/mmceformer), keyed by mmcv, torch, Python and CUDA versions and
# the build mode: CUDA ops when nvcc and a CUDA torch are there and a GPU is
# visible or FORCE_CUDA=1 / TORCH_CUDA_ARCH_LIST is set (both honoured, the
# arch list part of the key); CPU ops otherwise (FORCE_CUDA=0 forces them).
# A CPU wheel is never reused by a CUDA build, nor the other way round.
#
# MMCEFORMER_MMCV=lite installs mmcv 2.1.0 without compiled ops from its
# unpacked sdist (seconds; the distribution is then named mmcv-lite): for a
# test stage that skips what needs mmcv.ops (MMCEFORMER_NO_MMCV_OPS=1).
#
# MMCEFORMER_DRY_RUN=1 prints the install commands instead of running them.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MMCEFORMER_CACHE:-$HOME/.cache/mmceformer}"
MMCV_VERSION=2.1.0
MMCV_MODE="${MMCEFORMER_MMCV:-ops}"
TORCH_SPEC="${MMCEFORMER_TORCH:-torch==2.14.1 torchvision==0.29.1}"
DRY_RUN="${MMCEFORMER_DRY_RUN:-0}"
log() { echo "[setup_env] $*" >&2; }
run() {
    if [[ "$DRY_RUN" == 1 ]]; then echo "+ $*"; else "$@"; fi
}
case "$MMCV_MODE" in
    ops|lite) ;;
    *) log "MMCEFORMER_MMCV must be 'ops' or 'lite', got '$MMCV_MODE'"; exit 2 ;;
esac

if [[ -n "${MMCEFORMER_PYTHON:-}" ]]; then
    PY="$MMCEFORMER_PYTHON"
else
    VENV="${MMCEFORMER_VENV:-$ROOT/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        BASE_PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
        log "creating virtual environment $VENV with $BASE_PY"
        run "$BASE_PY" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# Skip everything when nothing that defines the environment changed.
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.mmceformer-setup-stamp"
WANT="$( (cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh"
          echo "$MMCV_MODE $TORCH_SPEC") | sha256sum | cut -d' ' -f1)"
if [[ "$MMCV_MODE" == ops ]]; then CHECK='import mmcv.ops'; else CHECK='import mmcv'; fi
if [[ "$DRY_RUN" != 1 && -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] &&
   "$PY" -c "$CHECK, mmdet, mmpretrain, mmceformer" >/dev/null 2>&1; then
    log "environment is up to date ($PY)"
    exit 0
fi

# torch: keep an importable one.
if "$PY" -c 'import torch' >/dev/null 2>&1; then
    TORCH_VERSION="$("$PY" -c 'import torch; print(torch.__version__)')"
    if ! "$PY" -c 'import torchvision' >/dev/null 2>&1; then
        log "keeping torch $TORCH_VERSION; installing a torchvision built for it"
        run "${PIP[@]}" install torchvision "torch==$TORCH_VERSION"
    else
        log "keeping torch $TORCH_VERSION"
    fi
else
    log "no torch in $PY: installing $TORCH_SPEC"
    # shellcheck disable=SC2086
    run "${PIP[@]}" install $TORCH_SPEC
fi
run "${PIP[@]}" install -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/build.txt"

fetch_mmcv_sdist() {  # unpacks mmcv's sdist into $1, echoes the source dir
    run "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
        --no-cache-dir -d "$1" "mmcv==$MMCV_VERSION" >&2
    run tar -xzf "$1/mmcv-$MMCV_VERSION.tar.gz" -C "$1"
    echo "$1/mmcv-$MMCV_VERSION"
}

if [[ "$MMCV_MODE" == lite ]]; then
    if ! "$PY" -c "import mmcv; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
        log "installing mmcv $MMCV_VERSION without compiled ops (mmcv-lite)"
        TMP="$(mktemp -d)"
        SRC="$(fetch_mmcv_sdist "$TMP")"
        MMCV_WITH_OPS=0 run "${PIP[@]}" install --no-build-isolation --no-deps "$SRC"
        rm -rf "$TMP"
    fi
elif ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
    NVCC="$(command -v nvcc || true)"
    if [[ -z "$NVCC" && -n "${CUDA_HOME:-}" && -x "$CUDA_HOME/bin/nvcc" ]]; then
        NVCC="$CUDA_HOME/bin/nvcc"
    fi
    # CUDA ops need nvcc and a CUDA torch, and a target: a visible GPU, or
    # FORCE_CUDA=1 / TORCH_CUDA_ARCH_LIST (a GPU-less login node building
    # for its GPU nodes). FORCE_CUDA=0 asks for CPU ops; so does a machine
    # with a CUDA toolkit but no GPU (a CPU CI runner), where a CUDA build
    # would take hours and serve nothing.
    TORCH_CUDA="$("$PY" -c 'import torch; print(torch.version.cuda or "")')"
    GPU_VISIBLE="$("$PY" -c 'import torch; print(int(torch.cuda.is_available()))')"
    WANT_CUDA=0
    if [[ -n "$NVCC" && -n "$TORCH_CUDA" && "${FORCE_CUDA:-}" != 0 ]]; then
        if [[ "${FORCE_CUDA:-}" == 1 || -n "${TORCH_CUDA_ARCH_LIST:-}" || "$GPU_VISIBLE" == 1 ]]; then
            WANT_CUDA=1
        fi
    fi
    BUILD_ENV=(MMCV_WITH_OPS=1 "MAX_JOBS=${MAX_JOBS:-$(nproc)}")
    if [[ "$WANT_CUDA" == 1 ]]; then
        CUDA_VERSION="$("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"
        ARCHS="${TORCH_CUDA_ARCH_LIST:-auto}"
        MODE="cuda${CUDA_VERSION}-arch${ARCHS// /_}"
        BUILD_ENV+=(FORCE_CUDA=1)
        [[ -n "${TORCH_CUDA_ARCH_LIST:-}" ]] && BUILD_ENV+=("TORCH_CUDA_ARCH_LIST=$TORCH_CUDA_ARCH_LIST")
    else
        MODE=cpu
    fi
    KEY="$("$PY" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')-$MODE"
    WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY"
    if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
        log "building mmcv $MMCV_VERSION with $MODE ops for $KEY (one time, ~15 min on 2 cores)"
        TMP="$(mktemp -d)"
        SRC="$(fetch_mmcv_sdist "$TMP")"
        # mmcv 2.1.0 compiles with -std=c++17; the headers of recent torch
        # (2.10 on) require C++20 and say so in ATen.h.
        TORCH_INC="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')/include"
        if grep -q 'C++20 or later' "$TORCH_INC/ATen/ATen.h" 2>/dev/null; then
            log "torch needs C++20: building mmcv with -std=c++20"
            run sed -i "s/'-std=c++17'/'-std=c++20'/g" "$SRC/setup.py"
        fi
        # --no-cache-dir: pip's own wheel cache ignores the torch version.
        run env "${BUILD_ENV[@]}" "${PIP[@]}" wheel \
            --no-build-isolation --no-deps --no-cache-dir -w "$TMP/dist" "$SRC"
        run mkdir -p "$WHEEL_DIR"
        if [[ "$DRY_RUN" != 1 ]]; then
            mv "$TMP"/dist/mmcv-*.whl "$WHEEL_DIR"/
            echo "mmcv $MMCV_VERSION ops=$MODE torch=$KEY built $(date -u +%FT%TZ)" > "$WHEEL_DIR/BUILD_INFO"
        fi
        rm -rf "$TMP"
    else
        log "using cached mmcv wheel from $WHEEL_DIR"
    fi
    run "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

# The OpenMMLab stack, the tests' needs and the deploy extra (ONNX). In lite mode the mmcv pin is
# left out: mmcv-lite is another distribution, pip would build full mmcv.
REQS=(-r "$ROOT/requirements/tests.txt" -r "$ROOT/requirements/deploy.txt")
if [[ "$MMCV_MODE" == lite ]]; then
    LITE_REQS="$(mktemp)"
    grep -v '^mmcv' "$ROOT/requirements/runtime.txt" > "$LITE_REQS"
    REQS+=(-r "$LITE_REQS")
else
    REQS+=(-r "$ROOT/requirements/runtime.txt")
fi
run "${PIP[@]}" install -c "$ROOT/requirements/constraints.txt" "${REQS[@]}"
run "${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
run "$PY" -c "$CHECK, mmdet, mmpretrain, mmceformer; print('mmceformer', mmceformer.__version__, 'ready')"
[[ "$DRY_RUN" == 1 ]] || echo "$WANT" > "$STAMP"

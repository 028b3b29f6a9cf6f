#!/usr/bin/env bash
# Bring the Python environment of mmceformer up to date; idempotent.
#
#   tools/setup_env.sh            # venv in ./.venv (default)
#   MMCEFORMER_VENV=/path/venv tools/setup_env.sh
#   MMCEFORMER_PYTHON=/path/to/your/env/bin/python tools/setup_env.sh
#       -> install into an existing environment instead of creating a venv
#          (its torch is kept if importable).
#
# The slow step is mmcv 2.1.0, which has no wheel on PyPI: it is built once
# with its compiled ops (about 20 minutes on 2 cores) and the wheel is kept in
# $MMCEFORMER_CACHE (default ~/.cache/mmceformer), keyed by the mmcv, torch and
# Python versions, so later set-ups on the same machine only install it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
CACHE="${MMCEFORMER_CACHE:-$HOME/.cache/mmceformer}"
MMCV_VERSION=2.1.0
TORCH_SPEC="torch==2.14.1 torchvision==0.29.1"
log() { echo "[setup_env] $*" >&2; }

if [[ -n "${MMCEFORMER_PYTHON:-}" ]]; then
    PY="$MMCEFORMER_PYTHON"
else
    VENV="${MMCEFORMER_VENV:-$ROOT/.venv}"
    if [[ ! -x "$VENV/bin/python" ]]; then
        BASE_PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"
        log "creating virtual environment $VENV with $BASE_PY"
        "$BASE_PY" -m venv "$VENV"
    fi
    PY="$VENV/bin/python"
fi
PIP=("$PY" -m pip --disable-pip-version-check)

# Skip everything when nothing that defines the environment changed.
STAMP_DIR="$("$PY" -c 'import sys; print(sys.prefix)')"
STAMP="$STAMP_DIR/.mmceformer-setup-stamp"
WANT="$(cat "$ROOT"/requirements/*.txt "$ROOT/setup.py" "$ROOT/tools/setup_env.sh" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] &&
   "$PY" -c 'import mmcv.ops, mmdet, mmpretrain, mmceformer' >/dev/null 2>&1; then
    log "environment is up to date ($PY)"
    exit 0
fi

if ! "$PY" -c 'import torch, torchvision' >/dev/null 2>&1; then
    log "installing $TORCH_SPEC"
    "${PIP[@]}" install $TORCH_SPEC
fi
"${PIP[@]}" install -c "$ROOT/requirements/constraints.txt" -r "$ROOT/requirements/build.txt"

if ! "$PY" -c "import mmcv, mmcv.ops; assert mmcv.__version__ == '$MMCV_VERSION'" >/dev/null 2>&1; then
    KEY="$("$PY" -c 'import sys, torch; print(f"torch{torch.__version__}-py{sys.version_info[0]}{sys.version_info[1]}")')"
    WHEEL_DIR="$CACHE/wheels/mmcv-$MMCV_VERSION-$KEY"
    if ! ls "$WHEEL_DIR"/mmcv-*.whl >/dev/null 2>&1; then
        log "building mmcv $MMCV_VERSION with ops for $KEY (one time, ~20 min on 2 cores)"
        TMP="$(mktemp -d)"
        "${PIP[@]}" download --no-deps --no-binary :all: --no-build-isolation \
            --no-cache-dir -d "$TMP" "mmcv==$MMCV_VERSION"
        tar -xzf "$TMP/mmcv-$MMCV_VERSION.tar.gz" -C "$TMP"
        SRC="$TMP/mmcv-$MMCV_VERSION"
        # mmcv 2.1.0 compiles with -std=c++17; the headers of recent torch
        # (2.10 on) require C++20 and say so in ATen.h.
        TORCH_INC="$("$PY" -c 'import os, torch; print(os.path.dirname(torch.__file__))')/include"
        if grep -q 'C++20 or later' "$TORCH_INC/ATen/ATen.h" 2>/dev/null; then
            log "torch needs C++20: building mmcv with -std=c++20"
            sed -i "s/'-std=c++17'/'-std=c++20'/g" "$SRC/setup.py"
        fi
        # --no-cache-dir: pip's own wheel cache ignores the torch version.
        MMCV_WITH_OPS=1 MAX_JOBS="${MAX_JOBS:-$(nproc)}" "${PIP[@]}" wheel \
            --no-build-isolation --no-deps --no-cache-dir -w "$TMP/dist" "$SRC"
        mv "$TMP"/dist/mmcv-*.whl "$TMP"/
        mkdir -p "$WHEEL_DIR"
        mv "$TMP"/mmcv-*.whl "$WHEEL_DIR"/
        rm -rf "$TMP"
    else
        log "using cached mmcv wheel from $WHEEL_DIR"
    fi
    "${PIP[@]}" install --no-deps --force-reinstall "$WHEEL_DIR"/mmcv-*.whl
fi

"${PIP[@]}" install -c "$ROOT/requirements/constraints.txt" \
    -r "$ROOT/requirements/runtime.txt" -r "$ROOT/requirements/tests.txt"
"${PIP[@]}" install --no-deps --no-build-isolation -e "$ROOT"
"$PY" -c 'import mmcv.ops, mmdet, mmpretrain, mmceformer; print("mmceformer", mmceformer.__version__, "ready")'
echo "$WANT" > "$STAMP"

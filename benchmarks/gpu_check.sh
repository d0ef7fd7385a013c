#!/usr/bin/env bash
# GPU check of the paper preset: the driver of benchmarks/gpu_check.py on a CUDA machine, also one that has
# torch, transformers and accelerate but no diffusers and no access to a package registry (a cluster node).
#
# 1. Where pip reaches PyPI, once: download the wheels such a machine lacks (diffusers, pinned to the version
#    installed here; pure Python, about 6 MB) into the ignored folder .gpu_wheels/:
#
#        bash benchmarks/gpu_check.sh --fetch
#
# 2. Copy the checkout with .gpu_wheels/ to the GPU machine and run, from the checkout:
#
#        bash benchmarks/gpu_check.sh [gpu_check.py options]       # about 5 minutes on one H200
#
#    Where diffusers is missing it installs the wheels into /tmp/gpu_check_site, puts that folder and the
#    checkout on PYTHONPATH (no pip install of the project: its build would need the network) and runs
#    gpu_check.py; the table lands in the output. With $OUT set to a folder, the log and the figures as JSON
#    also go to $OUT/gpu_check.log and $OUT/gpu_check.json.
#
# Without a CUDA device gpu_check.py refuses with one line and exit code 2.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
WHEELS=.gpu_wheels
SITE=/tmp/gpu_check_site

if [[ "${1:-}" == "--fetch" ]]; then
    PY=${PYTHON:-.venv/bin/python}
    [[ -x "$PY" ]] || PY=python3
    version=$("$PY" -c 'import importlib.metadata as m; print(m.version("diffusers"))')
    fresh=$(mktemp -d)
    "$PY" -m pip download --quiet --no-deps --only-binary=:all: --dest "$fresh" "diffusers==$version"
    rm -rf "$WHEELS"  # replaced only once the download succeeded
    mv "$fresh" "$WHEELS"
    ls -l "$WHEELS"
    echo "gpu_check: $(du -sh "$WHEELS" | cut -f1) in $WHEELS (the device tool carries at most 64 MiB)"
    exit 0
fi

PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
if ! "$PY" -c "import diffusers" >/dev/null 2>&1; then
    if ! compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "gpu_check: diffusers is not installed and $WHEELS/ holds no wheels; run 'bash benchmarks/gpu_check.sh --fetch' where pip reaches PyPI and carry $WHEELS" >&2
        exit 2
    fi
    "$PY" -m pip install --quiet --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl
    export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

if [[ -n "${OUT:-}" && -d "${OUT}" ]]; then
    set +e
    "$PY" benchmarks/gpu_check.py --json "$OUT/gpu_check.json" "$@" 2>&1 | tee "$OUT/gpu_check.log"
    status=${PIPESTATUS[0]}
    exit "$status"
fi
exec "$PY" benchmarks/gpu_check.py "$@"

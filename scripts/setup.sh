#!/usr/bin/env bash
# Create (or refresh) the project's virtual environment in .venv/ with the `factost` command.
# Idempotent: it reinstalls only when pyproject.toml changed since the last successful setup.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
PY="${PYTHON:-python3}"
TORCH_SPEC="${FACTOST_TORCH_SPEC:-torch==2.13.0}"
stamp=".venv/.factost-setup-stamp"
want="$(sha256sum pyproject.toml | cut -c1-16)-${TORCH_SPEC}"
if [[ -x .venv/bin/factost && -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
  exit 0
fi
echo "[setup] creating .venv (first run takes a few minutes)" >&2
[[ -d .venv ]] || "$PY" -m venv .venv
export PIP_DISABLE_PIP_VERSION_CHECK=1
# torch first, pinned: an unpinned torch resolves to a multi-GB CUDA build.
# GPU users: FACTOST_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
# shellcheck disable=SC2086
.venv/bin/pip install -q $TORCH_SPEC
# benchmarks: the fev and GIFT-Eval adapters (their tests run in the suite)
DS_BUILD_OPS=0 .venv/bin/pip install -q -e ".[dev,benchmarks]"
echo "$want" > "$stamp"
echo "[setup] ready: $(.venv/bin/python -c 'import torch,ray,prefect,deepspeed;print("torch",torch.__version__,"ray",ray.__version__,"prefect",prefect.__version__,"deepspeed",deepspeed.__version__)' 2>/dev/null)" >&2

#!/usr/bin/env bash
# Set up .venv if needed, then run the main job on the embedded default (local profile).
# Extra arguments go to the job, e.g. `bash scripts/main.sh --data-dir ~/benchmarks`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
exec .venv/bin/factost run pretrain-then-adapt --profile local "$@"

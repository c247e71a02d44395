#!/usr/bin/env bash
# The GPU table in one prepared run, for a lent machine that has torch and no package index.
#
#   bash bench/gpu.sh wheels      # here, with an index: diffusers and its dependencies -> bench/wheels/ (git-ignored, ~38 MB)
#   bash bench/gpu.sh run         # there (the device tool carries bench/wheels): installs them, writes $OUT/gpu/
#
# The run takes at most about 4 minutes: rows that would start after --budget seconds are
# written as skipped, and each finished row is already in $OUT/gpu/rows.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
case "${1:-run}" in
  wheels)
    version=$(python -c "import diffusers; print(diffusers.__version__)" 2>/dev/null || echo 0.42.1)
    python -m pip download --quiet --disable-pip-version-check -d bench/wheels "diffusers==$version" safetensors tqdm
    du -sh bench/wheels ;;
  run)
    out="${OUT:-/tmp/wanvae-gpu}/gpu"
    mkdir -p "$out"
    nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true
    # --no-deps: torch is the machine's own and must stay as it is.
    python -m pip install --quiet --disable-pip-version-check --no-index --no-deps bench/wheels/*.whl > "$out/pip.txt" 2>&1 \
      || echo "some wheels did not install (see pip.txt)"
    PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" timeout 285 python bench/gpu.py --out "$out" --dtype bfloat16 --budget 200 "${@:2}" \
      2>&1 | tee "$out/log.txt" ;;
  *) echo "usage: bench/gpu.sh wheels|run [gpu.py options]" >&2; exit 2 ;;
esac

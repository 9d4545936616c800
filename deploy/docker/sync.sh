#!/bin/sh
# The image's install step: the locked dependencies of the extras named in $EXTRAS (space or
# comma separated), the project itself (not editable), no dev tools, into $UV_PROJECT_ENVIRONMENT.
# An extra that needs torch (chronos, neuralforecast, darts) gets torch from $TORCH_INDEX
# (PyTorch's CPU index by default) as version <locked>+$TORCH_LOCAL, never the lock's PyPI build,
# which is a CUDA one on Linux with several GB of CUDA libraries.
#
#   EXTRAS="cluster statsforecast" deploy/docker/sync.sh [--dry-run] [UV-SYNC-OPTION...]
#
# --dry-run prints the commands instead of running them; other options go to uv sync
# (--no-install-project, --inexact...). Run from the project's root.
set -eu

TORCH_INDEX=${TORCH_INDEX:-https://download.pytorch.org/whl/cpu}
TORCH_LOCAL=${TORCH_LOCAL:-cpu}
run=""
if [ "${1:-}" = "--dry-run" ]; then
  run="echo"
  shift
fi

select="--no-dev"
for extra in $(echo "${EXTRAS:-}" | tr ',' ' '); do
  select="$select --extra $extra"
done

# shellcheck disable=SC2086 # $select is a list of words
requirements=$(uv export --locked --format requirements-txt --no-hashes --no-header \
  --no-annotate --no-emit-project $select)
torch=$(echo "$requirements" | sed -n 's/^torch==\([^ ;]*\).*/\1/p')

skip=""
if [ -n "$torch" ]; then
  for pkg in torch $(echo "$requirements" | sed -nE 's/^(nvidia-[^= ]+|cuda-[^= ]+|triton)==.*/\1/p'); do
    skip="$skip --no-install-package $pkg"
  done
fi
# shellcheck disable=SC2086
$run uv sync --locked --no-editable $select $skip "$@"
if [ -n "$torch" ]; then
  $run uv pip install --python "${UV_PROJECT_ENVIRONMENT:-.venv}" --no-deps \
    --index-url "$TORCH_INDEX" "torch==$torch+$TORCH_LOCAL"
fi

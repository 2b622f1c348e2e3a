#!/usr/bin/env bash
# Install sysctl-doctor into ./.venv and run the main job on the bundled example root
# (a node configured like the incident: be_liberal in sysctl.conf, nf_conntrack loaded late).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q -e .
set +e
.venv/bin/sysctl-doctor check --root examples/incident "$@"
code=$?
echo "(exit code $code: 0 clean, 1 findings at error level, 2 error)"

#!/usr/bin/env bash
# Install the *lowest* versions pyproject.toml allows (every ">=X" floor of [project.dependencies] as "==X",
# torch from the CPU wheel index) into a fresh venv, then run a test subset against them: the floors are what
# the code really needs (tests/test_dependencies.py says why each is what it is).
#
#   scripts/check_min_versions.sh [VENV_DIR] [extra pytest args]   (default VENV_DIR: $TMPDIR/neurop-diff-min)
#
# PYTEST_PREFIX is put before the test command (e.g. PYTEST_PREFIX="flock /tmp/cpu.lock" to share the CPUs).
# UNPINNED="torch torchvision" installs those at the newest available version instead of their floor (for a
# machine whose package index lacks the old torch wheels): the other floors are then still checked.
# Needs network access to PyPI and download.pytorch.org (about 1 GB of wheels); about 10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${1:-${TMPDIR:-/tmp}/neurop-diff-min}
shift || true
PYTHON=${PYTHON:-python3}

"$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
pins=$(UNPINNED="${UNPINNED:-}" "$VENV/bin/python" - <<'PY'
import os, re, tomllib
unpinned = os.environ["UNPINNED"].split()
for dep in tomllib.load(open("pyproject.toml", "rb"))["project"]["dependencies"]:
    name, floor = re.match(r"^\s*([A-Za-z0-9_.\-\[\]]+)\s*>=\s*([0-9][0-9.]*)", dep).groups()
    print(name if name in unpinned else f"{name}=={floor}")
PY
)
echo "minimum versions:" $pins
torch_pins=$(printf '%s\n' $pins | grep -E '^(torch|torchvision)==' || true)
if [ -n "$torch_pins" ]; then
  # CPU wheels of torch first (no CUDA libraries), then everything else from PyPI with torch at its floor.
  # shellcheck disable=SC2086
  "$VENV/bin/python" -m pip install --index-url https://download.pytorch.org/whl/cpu $torch_pins
fi
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install $pins "pytest>=8" "pytest-timeout>=2.3"
"$VENV/bin/python" -m pip install --no-deps -e .
"$VENV/bin/python" -m pip check
${PYTEST_PREFIX:-} "$VENV/bin/python" -m pytest -q -x \
  tests/test_dependencies.py tests/test_compat.py tests/test_operator.py tests/test_weights_srno.py \
  tests/test_detail.py tests/test_report.py tests/test_metrics_callback.py tests/test_datamodule.py \
  tests/test_prediction_writer.py tests/test_resume.py "$@"

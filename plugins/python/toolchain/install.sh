#!/usr/bin/env bash
# Installs the toolchain that builds Python plugins into WebAssembly
# components: componentize-py (from PyPI, pinned), in a virtualenv at
# $WEIR_TOOLS_DIR/python (default ~/.cache/weir/tools/python).
#
# Idempotent: a stamp names what was installed, and a matching stamp makes
# this a no-op, so build scripts run it every time. componentize-py carries
# CPython inside its package and downloads nothing when it builds.
set -euo pipefail

# Pinned so every machine builds the same components.
stamp="componentize-py==0.25.1"
dir="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/python"

if [[ "$(cat "$dir/.weir-stamp" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi
echo "installing $stamp into $dir (once)" >&2
command -v python3 >/dev/null || { echo "python3 is required" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$(dirname "$dir")"
python3 -m venv "$dir" >&2
"$dir/bin/python" -m pip install --quiet --disable-pip-version-check "$stamp" >&2
"$dir/bin/componentize-py" --version >&2
echo "$stamp" >"$dir/.weir-stamp"

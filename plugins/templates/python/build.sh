#!/usr/bin/env bash
# Runs the unit tests of {{name}}, then builds {{name}}.wasm, a component
# Weir loads, with componentize-py (installed on the first build by
# toolchain/install.sh under ~/.cache/weir/tools; see README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

toolchain/install.sh
componentize_py="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/python/bin/componentize-py"

python3 -m unittest discover -s . >&2

# Only the plugin and the helper go into the component, not the tests.
stage="$(mktemp -d)"
trap 'rm -rf "$stage"' EXIT
cp plugin.py "$stage/"
cp -R weir_plugin "$stage/"
rm -rf "$stage/weir_plugin/__pycache__"

# --stub-wasi: the component imports no WASI at all, only Weir's host
# interface, so Weir's sandbox accepts it as it is. --world-module names the
# generated bindings as weir_plugin imports them.
"$componentize_py" -q --world-module wit_world -d wit/weir-cdc.wit -w transform componentize plugin \
  -p "$stage" --stub-wasi -o "{{name}}.wasm" >&2
echo "{{name}}.wasm"

#!/usr/bin/env bash
# Runs the unit tests of {{name}}, then builds {{name}}.wasm, a component
# Weir loads, with ComponentizeJS (installed on the first build by
# toolchain/install.sh under ~/.cache/weir/tools; see README.md).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

toolchain/install.sh

node --test >&2
node weir_plugin/build.mjs --plugin plugin.js --wit wit/weir-cdc.wit -o "{{name}}.wasm"
echo "{{name}}.wasm"

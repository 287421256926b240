#!/usr/bin/env bash
# Installs the toolchain that builds JavaScript plugins into WebAssembly
# components: ComponentizeJS and jco (from npm), exactly the tree locked in
# the package-lock.json beside this script, at $WEIR_TOOLS_DIR/node (default
# ~/.cache/weir/tools/node).
#
# Idempotent: the lockfile's hash is the stamp, and a matching stamp makes
# this a no-op, so build scripts run it every time. No package install
# script is run; ComponentizeJS carries SpiderMonkey inside its package and
# downloads nothing when it builds.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="${WEIR_TOOLS_DIR:-$HOME/.cache/weir/tools}/node"
stamp="$(cat "$here/package.json" "$here/package-lock.json" | sha256sum | cut -d' ' -f1)"

if [[ "$(cat "$dir/.weir-stamp" 2>/dev/null)" == "$stamp" ]]; then
  exit 0
fi
echo "installing ComponentizeJS and jco into $dir (once)" >&2
command -v npm >/dev/null || { echo "node and npm are required" >&2; exit 1; }
rm -rf "$dir"
mkdir -p "$dir"
cp "$here/package.json" "$here/package-lock.json" "$dir/"
# Platform binaries (wizer, the oxc parser) arrive as npm optional
# dependencies; nothing needs an install script.
npm ci --prefix "$dir" --no-audit --no-fund --loglevel=error --ignore-scripts >&2
# Fails here, not at the first build, when a binary does not fit this
# platform.
node --input-type=module -e "await import('$dir/node_modules/@bytecodealliance/componentize-js/src/componentize.js')" >&2
echo "$stamp" >"$dir/.weir-stamp"

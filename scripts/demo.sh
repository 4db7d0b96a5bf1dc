#!/usr/bin/env bash
# Set up and run the demo: build -> push -> pull -> run -> commit, offline, on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
node dist/cli/demo.js "$@"

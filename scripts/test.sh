#!/usr/bin/env bash
# Set up, check (types, lint, format) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
npx tsc -p tsconfig.json --noEmit
npx biome check .
npm test

#!/usr/bin/env bash
# Set up, check (types, lint, format) and run every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
npm run --silent check
npm test

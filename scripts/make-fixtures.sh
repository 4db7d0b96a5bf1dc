#!/usr/bin/env bash
# Build (or find, when already cached on tmpfs) the image fixtures the unpack and layer tests
# use — busybox, debootstrap and crafted-layer images made with umoci and skopeo — and print
# where they are. The builder is src/testing/fixtures.ts; tests call it themselves, so this
# script is only for looking at the fixtures by hand. Needs root.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -f dist/testing/fixtures.js ] || npx tsc -p tsconfig.json
exec node dist/testing/fixtures.js "$@"

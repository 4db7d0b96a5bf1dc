#!/usr/bin/env bash
# Install what a fresh Debian 12 machine lacks to build, test and demo stratum:
# Debian packages (registry, interop oracles, runtime, codecs), then the npm dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."

DEBS=(docker-registry skopeo umoci runc busybox-static zstd pigz attr debootstrap apache2-utils)
missing=()
for p in "${DEBS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO=sudo
  echo "setup: installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# the packaged registry starts a system service we do not use; tests start their own
if command -v systemctl >/dev/null 2>&1; then systemctl disable --now docker-registry >/dev/null 2>&1 || true; fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  # `npm install` with the committed lock, not `npm ci`: the npm registry these machines reach
  # lacks Biome's binaries for other platforms, so the lock cannot list them and `npm ci`
  # refuses it as out of sync. The lock is still what gets installed (and is not rewritten).
  echo "setup: npm install (from package-lock.json)"
  npm install --no-audit --no-fund --loglevel=error
else
  npm run --silent build
fi

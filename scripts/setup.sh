#!/usr/bin/env bash
# Installs hyla's build and test dependencies from Debian's packages, only those missing.
# Does nothing (and needs no network) when everything is present.
set -euo pipefail

packages=(
  cmake gcc g++ make pkg-config           # build
  python3                                 # tests/gpu/emu/run.sh turns CUDA sources into C++
  libopenblas-dev                         # CBLAS matrix products (CPU backend)
  libopenmpi-dev openmpi-bin              # MPI coordinator and workers
  libyaml-dev                             # config files
  libsqlite3-dev sqlite3                  # experiment ledger
  libxxhash-dev                           # checkpoint checksums
  libjansson-dev                          # JSON (safetensors headers, --format json)
  zlib1g-dev                              # PNG decoding in the report's rendering test
  chromium                                # headless rendering test of hyla report
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if [ ${#missing[@]} -eq 0 ]; then
  echo "setup: all dependencies present"
  exit 0
fi

echo "setup: installing ${missing[*]}"
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "setup: error: need root or sudo to install ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

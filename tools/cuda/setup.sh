#!/usr/bin/env bash
# Fetches ptxas, cuobjdump and nvdisasm (Debian's CUDA 11.8 toolkit, package nvidia-cuda-toolkit in the
# `non-free` component) into .cache/cuda/bin, so the static GPU checks (tests/NegDistill.Tests/
# PtxasTests.cs, tools/gpu/ptxas-report.sh) run on a machine without a GPU or a CUDA install.
#
# What it does: an apt state folder and a sources list of its own (the system's apt setup is not
# touched) naming bookworm `main contrib non-free`; `apt-get download nvidia-cuda-toolkit`; `dpkg -x`
# into a scratch folder; the three tools copied to .cache/cuda/bin (they need only libc, libm and
# libpthread); the scratch folder removed (the package unpacks to ~300 MB).
#
# Usage:  bash tools/cuda/setup.sh          (idempotent; a finished cache is reused)
# Exits non-zero with a message naming the step that failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache/cuda"
STAMP="$CACHE/.complete-v1"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

fail() { echo "tools/cuda/setup.sh: $*" >&2; exit 1; }

if [[ -f "$STAMP" && -x "$CACHE/bin/ptxas" ]] && "$CACHE/bin/ptxas" --version >/dev/null 2>&1; then
  echo "ptxas ready: $CACHE/bin/ptxas"; exit 0
fi
command -v apt-get >/dev/null || fail "apt-get not found: this recipe needs a Debian machine"
command -v dpkg >/dev/null || fail "dpkg not found"

rm -rf "$CACHE"; mkdir -p "$CACHE"/{apt/lists/partial,apt/archives/partial,debs,x,bin}
list="$CACHE/apt/sources.list"
echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR bookworm main contrib non-free" > "$list"
opts=(-o "Dir::Etc::SourceList=$list" -o "Dir::Etc::SourceParts=/dev/null"
      -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache::Archives=$CACHE/apt/archives"
      -o "Dir::State::Status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root" -qq)

echo "[1/3] apt-get download nvidia-cuda-toolkit (bookworm non-free, ~84 MB)"
apt-get "${opts[@]}" update || fail "apt-get update for Debian bookworm non-free failed ($MIRROR)"
(cd "$CACHE/debs" && apt-get "${opts[@]}" download nvidia-cuda-toolkit) || fail "apt-get download nvidia-cuda-toolkit failed"
deb=$(ls "$CACHE"/debs/nvidia-cuda-toolkit_*.deb 2>/dev/null | head -1)
[[ -n "$deb" ]] || fail "nvidia-cuda-toolkit was not downloaded"

echo "[2/3] unpack ptxas, cuobjdump, nvdisasm"
dpkg -x "$deb" "$CACHE/x" || fail "dpkg -x $deb failed"
for tool in ptxas cuobjdump nvdisasm; do
  src=$(find "$CACHE/x" -type f -name "$tool" | head -1)
  [[ -n "$src" ]] || fail "$tool not found in $deb"
  cp "$src" "$CACHE/bin/$tool"; chmod +x "$CACHE/bin/$tool"
done
rm -rf "$CACHE/x" "$CACHE/debs" "$CACHE/apt"

echo "[3/3] check"
"$CACHE/bin/ptxas" --version | tail -1 || fail "ptxas does not start"
touch "$STAMP"
echo "ptxas ready: $CACHE/bin/ptxas"

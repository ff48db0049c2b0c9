#!/usr/bin/env bash
# Makes the self-contained pack that carries NegDistill to a machine without .NET (the GPU machine):
# `negdistill` published for linux-x64 with the .NET runtime inside (single file, not compressed by .NET,
# so xz does better), plus the plotting libraries it loads, tarred with xz into
#   .gpu/negdistill-linux-x64.tar.xz        (git-ignored)
# Everything that travels to the device machine (tracked files + carried folders) is limited to 64 MiB,
# so the pack must stay at or under 48 MiB: this script prints its size and fails above that.
# Measured 2026-12-01: 89 MB published, 28 MiB as tar.xz (compressing the .NET-compressed single file
# instead gave 36 MiB; the bare .NET-compressed folder was 50 MiB).
#
# Usage: bash tools/gpu/pack.sh            then carry `.gpu` and run `bash tools/gpu/check.sh` there.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LIMIT_MIB=48
OUT="$ROOT/.gpu"
STAGE="$OUT/negdistill"
PACK="$OUT/negdistill-linux-x64.tar.xz"
fail() { echo "tools/gpu/pack.sh: $*" >&2; exit 1; }
command -v dotnet >/dev/null || fail "the .NET 10 SDK is required (dotnet not on PATH)"
command -v xz >/dev/null || fail "xz is required (Debian package xz-utils)"

rm -rf "$STAGE" "$PACK"; mkdir -p "$OUT"
echo "[1/3] dotnet publish src/NegDistill.Cli (linux-x64, self-contained, single file)"
dotnet publish "$ROOT/src/NegDistill.Cli" -c Release -r linux-x64 --self-contained \
  -p:PublishSingleFile=true -p:DebugType=none -p:GenerateDocumentationFile=false -o "$STAGE" -v quiet -nologo \
  || fail "dotnet publish failed"
[[ -x "$STAGE/negdistill" ]] || fail "publish produced no $STAGE/negdistill"
commit=$(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=$([[ -n "$(git -C "$ROOT" status --porcelain 2>/dev/null)" ]] && echo "+changes" || echo "")
printf 'negdistill pack\ncommit %s%s\nmade %s\nhost %s\n' "$commit" "$dirty" "$(date -u +%FT%TZ)" "$(uname -srm)" > "$STAGE/PACK-INFO"

echo "[2/3] tar + xz"
tar -C "$OUT" -cf - negdistill | xz -T0 -6 > "$PACK" || fail "tar/xz failed"
rm -rf "$STAGE"

bytes=$(stat -c %s "$PACK")
mib=$(awk -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 }')
echo "[3/3] $PACK: $mib MiB ($bytes bytes; limit $LIMIT_MIB MiB)"
if (( bytes > LIMIT_MIB * 1048576 )); then
  fail "the pack is $mib MiB, over the $LIMIT_MIB MiB that leaves room for the checkout within the device's 64 MiB transfer limit; drop a dependency or trim"
fi

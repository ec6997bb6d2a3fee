#!/usr/bin/env bash
# Usage: check_docs.sh DOXYGEN SOURCE_DIR OUT_DIR — builds the API docs and fails on any warning,
# on a public header (.hpp or .cuh, outside detail/) without its page, or on a CUDA entry point
# missing from the docs (doxygen skips .cuh files silently unless told they are C++).
set -euo pipefail
doxygen=$1 src=$2 out=$3
rm -rf "$out" && mkdir -p "$out"
cd "$src"
( cat Doxyfile; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $out/warnings.log" ) | "$doxygen" - >"$out/doxygen.log" 2>&1
if [ -s "$out/warnings.log" ]; then
  echo "doxygen warnings:"; cat "$out/warnings.log"; exit 1
fi
test -f "$out/html/index.html"

pages=$(grep -ho '<title>[^<]* File Reference</title>' "$out"/html/*.html | sed 's/^<title>[^:]*: //; s/ File Reference<\/title>$//' | sort -u)
missing=0
while IFS= read -r h; do
  if ! grep -qxF "$h" <<<"$pages"; then echo "no documentation page for $h"; missing=1; fi
done < <(find include/awq \( -name '*.hpp' -o -name '*.cuh' \) -not -path '*/detail/*' | sort)
for sym in 'awq::backend::cuda' 'awq::cuda::StreamScope' 'awq::cuda::W4A16ArgsT' 'w4a16_matmul'; do
  if ! grep -qF "$sym" "$out"/html/*.html; then echo "the CUDA API's $sym is not in the docs"; missing=1; fi
done
[ "$missing" = 0 ] || exit 1
echo "docs built with no warnings, $(wc -l <<<"$pages") header pages (.hpp and .cuh): $out/html/index.html"

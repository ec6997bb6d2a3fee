#!/usr/bin/env bash
# Usage: check_docs.sh DOXYGEN SOURCE_DIR OUT_DIR — builds the API docs and fails on any warning.
set -euo pipefail
doxygen=$1 src=$2 out=$3
rm -rf "$out" && mkdir -p "$out"
cd "$src"
( cat Doxyfile; echo "OUTPUT_DIRECTORY = $out"; echo "WARN_LOGFILE = $out/warnings.log" ) | "$doxygen" - >"$out/doxygen.log" 2>&1
if [ -s "$out/warnings.log" ]; then
  echo "doxygen warnings:"; cat "$out/warnings.log"; exit 1
fi
test -f "$out/html/index.html"
echo "docs built with no warnings: $out/html/index.html"

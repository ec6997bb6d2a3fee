#!/usr/bin/env bash
# Usage: check_test_names.sh TEST_BINARY...
# ctest runs each doctest case by its name (doctest_discover_tests), and CMake splits a name at
# ';' into several tests that match no case and pass having run nothing: no name may hold one.
set -euo pipefail
bad=0
for bin in "$@"; do
  [ -n "$bin" ] || continue
  names=$("$bin" --list-test-cases --no-version)
  if grep -F ';' <<<"$names"; then bad=1; fi
done
if [ $bad -ne 0 ]; then
  echo "error: the test case names above hold ';': ctest would split them and run nothing"
  exit 1
fi
echo "no test case name holds ';'"

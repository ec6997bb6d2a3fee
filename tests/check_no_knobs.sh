#!/usr/bin/env bash
# Usage: check_no_knobs.sh INCLUDE_DIR
# Fails when a shipped header holds a tuning or probe macro: a default set by "#ifndef AWQ_X /
# #define AWQ_X", or a conditional on an AWQ_ macro that no header defines (set with -D). Tuning is
# a type (awq/kernels/cuda/tiled/tuning.hpp); macros a header derives itself (feature tests) pass.
set -euo pipefail
dir=$1
fail=0
if grep -rnE -A1 '^\s*#\s*ifndef\s+AWQ_' "$dir" | grep -E '#\s*define\s+AWQ_'; then
  echo "error: the lines above give a knob macro its default"
  fail=1
fi
for name in $(grep -rhE '^\s*#\s*(if|ifdef|ifndef|elif)\b' "$dir" | grep -oE '\bAWQ_[A-Z0-9_]+' | sort -u); do
  [ "$name" = AWQ_NO_SIMD ] && continue  # the documented portable-only build switch, not a tuning
  if ! grep -rqE "^\s*#\s*define\s+$name\b" "$dir"; then
    echo "error: $name is tested in a header but defined in none (a -D knob): $(grep -rlE "\b$name\b" "$dir" | tr '\n' ' ')"
    fail=1
  fi
done
[ $fail = 0 ] && echo "no tuning or probe macros in $dir"
exit $fail

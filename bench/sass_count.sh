#!/usr/bin/env bash
# SASS of one kernel of a binary built on the device (cuobjdump there): its instruction count, an
# opcode histogram, then the full listing.
# usage (device machine): bash bench/sass_count.sh build-gpu/bench_w4a16 'w4a16_tiled_wgmma_kernelILi64' > $OUT/sass.txt
bin=$1; pat=$2
cuobjdump -sass "$bin" | awk -v p="$pat" '/Function :/ {on = index($0, p) > 0} on' > /tmp/sass_kernel.txt
echo "== $pat: $(grep -cE '^\s+/\*[0-9a-f]{4}\*/' /tmp/sass_kernel.txt) instructions"
grep -oE '^\s+/\*[0-9a-f]{4}\*/\s+(@!?U?P[0-9T] )?[A-Z0-9_.]+' /tmp/sass_kernel.txt | awk '{print $NF}' | sed 's/\..*//' | sort | uniq -c | sort -rn | head -40
echo "== full listing"
cat /tmp/sass_kernel.txt

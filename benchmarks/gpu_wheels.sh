#!/usr/bin/env bash
# The wheels a lent GPU machine lacks, fetched here into .whl/ (git-ignored) for the device tool to
# carry: that machine has Python 3.12 with torch, numpy, scipy, scikit-learn / -image, opencv,
# pandas, h5py, click, tqdm and pyyaml, and no package registry. The versions are this venv's.
# TIAToolbox does not travel (its needs exceed the 64 MiB a call carries): the GPU check uses the
# embedded segmenter. Then, in the device call: carry [".whl"] and start the command with
#     python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl \
#       && export PYTHONPATH=/tmp/site:$PWD
set -euo pipefail
cd "$(dirname "$0")/.."
py=${PYTHON:-.venv/bin/python}
names=(kornia kornia_rs zarr numcodecs donfig google-crc32c crc32c openslide-python openslide-bin
  shapely anndata array-api-compat legacy-api-wrap natsort scverse-misc)
pins=()
for name in "${names[@]}"; do
  v=$("$py" -m pip show "$name" 2>/dev/null | sed -n 's/^Version: //p' || true)
  if [ -n "$v" ]; then pins+=("$name==$v"); fi
done
rm -rf .whl && mkdir .whl
for pin in "${pins[@]}"; do
  "$py" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    --platform manylinux1_x86_64 --platform any -d .whl "$pin"
done
du -sh .whl
ls .whl

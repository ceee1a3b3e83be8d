#!/usr/bin/env bash
# The GPU check, one call on a lent GPU machine (about 8 minutes): the `gpu` tests, then training
# images/s (paper profile: small stem, batch 1024, bf16), label embedding cells/s, whole-slide
# segment s/mm² with the embedded model, each under its own time limit. Every step's output lands
# in OUT (default gpu-check/) and OUT/summary.md collects the tables, with the GPU's name, for
# BENCHMARKS.md ("GPU"). A step that fails or runs out of time is named in the summary; the others
# still run. The GPU machine has torch but no package registry: `bash benchmarks/gpu_wheels.sh`
# here first fetches what it lacks into .whl/, which the device call carries. From the repo root:
#     OUT=$OUT bash benchmarks/gpu_check.sh          (device tool: carry [".whl"])
# Not run there: the paper profile of `benchmark consep` needs the CoNSeP patches, which live in
# ../shared (it does not travel) and with the wheels exceed the 64 MiB a call carries.
set -uo pipefail
out=${OUT:-gpu-check}
py=${PYTHON:-python3}
mkdir -p "$out"
if [ -d .whl ]; then  # what the machine lacks, installed offline; the project from this tree
  $py -m pip install -q --no-index --no-deps --no-compile --target /tmp/site .whl/*.whl ||
    echo "installing .whl/ failed; steps below may fail to import" >&2
  mkdir -p /tmp/site/bin && ln -sfn "$PWD/cli" /tmp/site/wsi_ccrl_cli  # cli/ installs under that name
  printf '#!/bin/sh\nexec %s -c "from wsi_ccrl_cli.main import cli; cli(prog_name=\"wsi-ccrl\")" "$@"\n' "$py" \
    > /tmp/site/bin/wsi-ccrl && chmod +x /tmp/site/bin/wsi-ccrl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH} PATH=/tmp/site/bin:$PATH
fi
summary="$out/summary.md"
gpu=$(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -1)
{
  echo "# GPU check"
  echo
  echo "GPU: ${gpu:-none visible}; $(date -u '+%Y-%m-%d %H:%M UTC'); torch $($py -c 'import torch; print(torch.__version__, torch.version.cuda)')"
  echo
} > "$summary"

step() {  # step NAME SECONDS COMMAND...
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  local verdict="ok"
  [ "$rc" -eq 124 ] && verdict="ran out of its ${limit} s"
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && verdict="failed (exit $rc)"
  {
    echo "## $name: $verdict, $((SECONDS - t0)) s"
    echo
    echo '```'
    echo "$*"
    echo '```'
    echo
    tail -n 40 "$out/$name.log"
    echo
  } >> "$summary"
}

step gpu-tests 90 $py -m pytest -q -m gpu -p no:cacheprovider tests
step train 120 $py benchmarks/train.py --sizes 32 --stems small --batch 1024 --device cuda \
  --input-steps 10 --train-steps 20 --patches 200
step label 120 $py benchmarks/label.py --cells 100000 --small-cells 10000 --embed-cells 200000 \
  --batch-size 1024 --device cuda
step segment 150 $py benchmarks/segment.py --cases embedded --slides sample,large --size 20000 \
  --workdir "$out/segment-work" --device cuda
echo "wrote $summary"

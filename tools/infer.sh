#!/usr/bin/env bash
# Launch an inference script FILE on NPROC processes per node with torchrun (LiBai's
# tools/infer.sh):
#   bash tools/infer.sh tools/generate.py 2 --config-file CONFIG --model-path DIR --prompt "..." \
#       --tensor-parallel 2
# Several machines: NODE=2 NODE_RANK=0|1 ADDR=<node 0 address> PORT=12345 on each one.
# MAX_RESTARTS=N restarts the workers up to N times when one fails (with --resume, a
# restarted training run continues from its last checkpoint).
# tools/train.sh launches through this script too.
set -euo pipefail

if [ "$#" -lt 2 ]; then
  echo "usage: bash tools/infer.sh FILE NPROC [args ...]" >&2
  exit 2
fi

FILE=$1
GPUS=$2
NODE=${NODE:-1}
NODE_RANK=${NODE_RANK:-0}
ADDR=${ADDR:-127.0.0.1}
PORT=${PORT:-12345}
# One thread per process unless the user asks otherwise: N processes share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$TOOLS_DIR/launch.py" \
  --nproc_per_node "$GPUS" --nnodes "$NODE" --node_rank "$NODE_RANK" \
  --master_addr "$ADDR" --master_port "$PORT" --max-restarts "${MAX_RESTARTS:-0}" \
  "$FILE" "${@:3}"

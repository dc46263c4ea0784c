#!/usr/bin/env bash
# Launch FILE on NPROC processes per node with torchrun, as LiBai's tools/train.sh does.
#   bash tools/train.sh tools/train_net.py projects/mnist/config.py 8 [overrides...]
# Several machines: NODE=2 NODE_RANK=0|1 ADDR=<node 0 address> PORT=12345 on each one.
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: bash tools/train.sh FILE CONFIG NPROC [key=value ...]" >&2
  exit 2
fi

FILE=$1
CONFIG=$2
GPUS=$3
NODE=${NODE:-1}
NODE_RANK=${NODE_RANK:-0}
ADDR=${ADDR:-127.0.0.1}
PORT=${PORT:-12345}
# One thread per process unless the user asks otherwise: N processes share the cores.
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}

TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec python3 "$TOOLS_DIR/launch.py" \
  --nproc_per_node "$GPUS" --nnodes "$NODE" --node_rank "$NODE_RANK" \
  --master_addr "$ADDR" --master_port "$PORT" \
  "$FILE" --config-file "$CONFIG" "${@:4}"

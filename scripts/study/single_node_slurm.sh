#!/usr/bin/env bash
# A single-node SLURM on this machine, for CI and for trying a study on one workstation.
#
#   scripts/study/single_node_slurm.sh run [--cpus N] -- COMMAND...   start, run COMMAND with
#                       SLURM_CONF set, stop the daemons on every exit path; COMMAND's status
#   scripts/study/single_node_slurm.sh start DIR [--cpus N]   start; prints `export SLURM_CONF=...`
#   scripts/study/single_node_slurm.sh stop DIR               stop what `start DIR` started
#
# The distribution's munge, slurmctld and slurmd (Debian/Ubuntu: the packages munge,
# slurmctld, slurmd, slurm-client; plus jq, which the array script reads its config with)
# are installed with apt-get when missing, which needs root. Everything else (munge key and
# socket, slurm.conf, state, spool, pid and log files) lives in DIR (`run`: a new temporary
# directory, removed afterwards); nothing under /etc is touched. Every wait has a timeout:
# without root, packages or a reachable mirror this fails with a message, it never hangs.
set -euo pipefail

STARTUP_TIMEOUT=${SLURM_STARTUP_TIMEOUT:-60}  # seconds for the node to come up
INSTALL_TIMEOUT=${SLURM_INSTALL_TIMEOUT:-600}
PACKAGES=(munge slurmctld slurmd slurm-client jq)
NEEDED=(munged slurmctld slurmd sbatch squeue scontrol jq)

die() { echo "single_node_slurm: $*" >&2; exit 2; }

missing_commands() {
  local c out=()
  for c in "${NEEDED[@]}"; do
    command -v "$c" >/dev/null 2>&1 || [[ -x /usr/sbin/$c ]] || out+=("$c")
  done
  echo "${out[*]:-}"
}

ensure_packages() {
  local missing
  missing=$(missing_commands)
  [[ -z $missing ]] && return 0
  if [[ $(id -u) -ne 0 ]]; then
    die "missing ${missing}; installing them needs root (apt-get install ${PACKAGES[*]}), or ask your admin for a SLURM account"
  fi
  command -v apt-get >/dev/null 2>&1 \
    || die "missing ${missing} and no apt-get here: install munge, slurmctld, slurmd (22.05 or later) and jq"
  echo "single_node_slurm: installing ${PACKAGES[*]} (apt-get)" >&2
  export DEBIAN_FRONTEND=noninteractive
  timeout "$INSTALL_TIMEOUT" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2 \
    || { timeout "$INSTALL_TIMEOUT" apt-get update -q >&2 \
         && timeout "$INSTALL_TIMEOUT" apt-get install -y -q --no-install-recommends "${PACKAGES[@]}" >&2; } \
    || die "apt-get install ${PACKAGES[*]} failed (no network or no such packages?)"
  # The packages' own services are not used (and must not hold the ports).
  for s in slurmctld slurmd munge; do
    command -v systemctl >/dev/null 2>&1 && systemctl stop "$s" >/dev/null 2>&1 || true
  done
  missing=$(missing_commands)
  [[ -z $missing ]] || die "still missing after apt-get: ${missing}"
}

sbin() { command -v "$1" 2>/dev/null || echo "/usr/sbin/$1"; }

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

write_config() {  # DIR CPUS
  local dir=$1 cpus=$2 host mem
  host=$(hostname -s)
  mem=$(awk '/MemTotal/ {print int($2/1024*0.9)}' /proc/meminfo)
  mkdir -p "$dir/state" "$dir/spool" "$dir/log"
  cat >"$dir/slurm.conf" <<CONF
# Written by scripts/study/single_node_slurm.sh: one node, this machine, no accounting.
ClusterName=study
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=$(free_port)
SlurmdPort=$(free_port)
SlurmUser=$(id -un)
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=${dir}/munge.socket
CredType=cred/munge
StateSaveLocation=${dir}/state
SlurmdSpoolDir=${dir}/spool
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/log/slurmctld.log
SlurmdLogFile=${dir}/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
JobRequeue=1
KillWait=5
MinJobAge=600
SchedulerParameters=sched_interval=2
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} RealMemory=${mem} State=UNKNOWN
PartitionName=study Nodes=${host} Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {  # DIR CPUS
  local dir=$1 cpus=$2 deadline
  ensure_packages
  [[ $(id -u) -eq 0 ]] || die "needs root (slurmd runs as root): run it as root, or use your cluster's SLURM"
  dir=$(cd "$dir" && pwd)
  chmod 700 "$dir"
  write_config "$dir" "$cpus"
  dd if=/dev/urandom of="$dir/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge.key"
  timeout 20 "$(sbin munged)" --force --key-file="$dir/munge.key" --socket="$dir/munge.socket" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" --seed-file="$dir/munged.seed" \
    || die "munged did not start (see $dir/log/munged.log)"
  export SLURM_CONF=$dir/slurm.conf
  "$(sbin slurmctld)" -f "$SLURM_CONF" -i || die "slurmctld did not start (see $dir/log/slurmctld.log)"
  "$(sbin slurmd)" -f "$SLURM_CONF" || die "slurmd did not start (see $dir/log/slurmd.log)"
  deadline=$((SECONDS + STARTUP_TIMEOUT))
  until timeout 5 sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; do
    if ((SECONDS > deadline)); then
      tail -5 "$dir/log/slurmctld.log" "$dir/log/slurmd.log" >&2 || true
      die "the node did not come up in ${STARTUP_TIMEOUT} s (logs in $dir/log)"
    fi
    sleep 1
  done
  echo "export SLURM_CONF=$SLURM_CONF"
}

stop() {  # DIR
  local dir=$1 f pid
  for f in slurmd slurmctld munged; do
    [[ -f $dir/$f.pid ]] || continue
    pid=$(cat "$dir/$f.pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill "$pid" 2>/dev/null || true
  done
  for _ in $(seq 20); do
    local alive=0
    for f in slurmd slurmctld munged; do
      pid=$(cat "$dir/$f.pid" 2>/dev/null || true)
      [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && alive=1
    done
    ((alive)) || return 0
    sleep 0.5
  done
  for f in slurmd slurmctld munged; do
    pid=$(cat "$dir/$f.pid" 2>/dev/null || true)
    [[ -n $pid ]] && kill -9 "$pid" 2>/dev/null || true
  done
}

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }

cmd=${1:-}; shift || true
case $cmd in
  start)
    [[ $# -ge 1 ]] || usage
    dir=$1; shift; cpus=$(nproc)
    [[ ${1:-} == --cpus ]] && cpus=$2
    mkdir -p "$dir"
    start "$dir" "$cpus"
    ;;
  stop)
    [[ $# -ge 1 ]] || usage
    stop "$1"
    ;;
  run)
    cpus=$(nproc)
    [[ ${1:-} == --cpus ]] && { cpus=$2; shift 2; }
    [[ ${1:-} == -- ]] && shift
    [[ $# -ge 1 ]] || usage
    dir=$(mktemp -d "${TMPDIR:-/tmp}/single-node-slurm.XXXXXX")
    keep=${KEEP_SLURM_DIR:-0}
    trap 'stop "$dir"; [[ $keep == 1 ]] || rm -rf "$dir"' EXIT
    trap 'exit 130' INT TERM
    start "$dir" "$cpus" >/dev/null
    export SLURM_CONF=$dir/slurm.conf
    status=0
    "$@" || status=$?
    exit "$status"
    ;;
  -h|--help) usage 0 ;;
  *) usage ;;
esac

#!/usr/bin/env bash
# Tests submit.sh against a real Slurm: installs Debian's slurmctld, slurmd and munge when
# missing, starts a one-node cluster on this machine (its own configuration, state and ports
# under a temporary folder), submits a 3-task array over toy-world faces on the embedded model,
# waits for the collect job, checks the summary, and stops everything it started.
#
#   scripts/slurm/test.sh [BUILD_DIR=build]     (as root, or with sudo)
set -euo pipefail
cd "$(dirname "$0")/../.."
root="$(pwd)"
bin="$root/${1:-build}/tools/singleinsert"
[ -x "$bin" ] || { echo "error: $bin: build first" >&2; exit 1; }
sudo_cmd=()
[ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
missing=()
for package in slurmctld slurmd slurm-client munge; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  "${sudo_cmd[@]}" apt-get update -qq
  "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

work="$(mktemp -d /tmp/singleinsert-slurm.XXXXXX)"
host="$(hostname -s)"
cpus="$(nproc)"
memory_mb=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
mkdir -p "$work/state" "$work/spool" "$work/munge"
cat >"$work/slurm.conf" <<CONF
ClusterName=singleinsert-test
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=16817
SlurmdPort=16818
AuthType=auth/munge
StateSaveLocation=$work/state
SlurmdSpoolDir=$work/spool
SlurmctldPidFile=$work/slurmctld.pid
SlurmdPidFile=$work/slurmd.pid
SlurmctldLogFile=$work/slurmctld.log
SlurmdLogFile=$work/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
NodeName=$host CPUs=$cpus RealMemory=$memory_mb State=UNKNOWN
PartitionName=test Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$work/slurm.conf"

munge_pid=""
cleanup() {
  scontrol shutdown >/dev/null 2>&1 || true
  sleep 1
  for pidfile in "$work/slurmd.pid" "$work/slurmctld.pid"; do
    [ -f "$pidfile" ] && kill "$(cat "$pidfile")" 2>/dev/null || true
  done
  [ -z "$munge_pid" ] || kill "$munge_pid" 2>/dev/null || true
}
trap cleanup EXIT

# munge: a key of our own and a private socket, so a running munged is left alone.
dd if=/dev/urandom bs=1 count=1024 of="$work/munge/munge.key" 2>/dev/null
chmod 400 "$work/munge/munge.key"
chmod 700 "$work/munge"
socket="$work/munge/munge.socket"
"${sudo_cmd[@]}" munged --force --key-file="$work/munge/munge.key" --socket="$socket" \
  --pid-file="$work/munge/munged.pid" --log-file="$work/munge/munged.log" --seed-file="$work/munge/seed"
munge_pid="$(cat "$work/munge/munged.pid")"
# Slurm's munge plugin finds the socket through AuthInfo.
sed -i "s|^AuthType=auth/munge|AuthType=auth/munge\nAuthInfo=socket=$socket|" "$work/slurm.conf"

"${sudo_cmd[@]}" slurmctld -f "$work/slurm.conf" -c
"${sudo_cmd[@]}" slurmd -f "$work/slurm.conf"
for _ in $(seq 60); do
  sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)' && break
  sleep 1
done
sinfo -h -o '%T' | grep -qE '^(idle|mixed|allocated)' || {
  echo "error: the test cluster did not come up:" >&2
  tail -n 5 "$work/slurmctld.log" "$work/slurmd.log" >&2
  exit 1
}

# The embedded model's tokenizer is written from the world's vocabulary (as scripts/demo.sh does).
[ -d assets/world/model/tokenizer ] || "$bin" world --write-tokenizer assets/world/model/tokenizer >/dev/null
# Three toy-world faces (a face each, never seen in training) with their known masks.
"$bin" world --source --held-out --count 3 --seed 40 --size 64 --out "$work/faces" >/dev/null
mkdir -p "$work/photos" "$work/masks"
for i in 0 1 2; do
  cp "$work/faces/sample_000$i.png" "$work/photos/"
  cp "$work/faces/sample_000${i}_mask.png" "$work/masks/sample_000$i.png"
done
"$bin" prepare --images "$work/photos" --masks "$work/masks" --size 64 --out "$work/prepared" >/dev/null 2>&1

started=$(date +%s)
scripts/slurm/submit.sh --prepared "$work/prepared" --out "$work/batch" --model assets/world/model --bin "$bin" \
  --concurrency 3 --cpus-per-task 1 -- --stage1-args "--preset world --steps 10" --stage2-args "--preset world --steps 5" \
  --generate-args "--steps 5 --width 64 --height 64" --eval-args "--steps 5" \
  --detector assets/world/world_detector.safetensors --world-samples "$work/faces/samples.jsonl" | tee "$work/submit.txt"
collect=$(grep -oE 'collect job [0-9]+' "$work/submit.txt" | grep -oE '[0-9]+')
while squeue -h -j "$collect" 2>/dev/null | grep -q .; do
  [ $(( $(date +%s) - started )) -lt 1800 ] || { echo "error: the array did not finish in 30 minutes" >&2; exit 1; }
  sleep 2
done
cat "$work/batch/summary.md"
done_count=$(grep -oE '"done": [0-9]+' "$work/batch/summary.json" | grep -oE '[0-9]+')
tasks=$(ls "$work/batch/slurm"/task_*.log | wc -l)
if [ "$done_count" != 3 ] || [ "$tasks" != 3 ] || ! grep -q '"closeness_whole"' "$work/batch/summary.json"; then
  echo "error: expected 3 tasks and 3 finished photos with the world's figures; got $tasks tasks, $done_count done" >&2
  tail -n 5 "$work/batch/slurm"/*.log >&2
  exit 1
fi
echo "slurm: 3-task array and collect job finished in $(( $(date +%s) - started )) s; summary checked ($work)" >&2

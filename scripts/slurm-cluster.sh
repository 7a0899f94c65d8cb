#!/usr/bin/env bash
# Starts a real one-node Slurm on this machine (for droptrace's cluster tests
# and for trying `droptrace slurm` without a cluster). Idempotent: installs
# Debian's munge, slurmctld, slurmd and slurm-client when missing, creates the
# munge key, writes /etc/slurm/slurm.conf, starts munged, slurmctld and slurmd
# when they are not running, and waits until `sinfo` shows the node idle.
# Works in a container without systemd (daemons are started directly).
#
# Settings (environment):
#   DROPTRACE_SLURM_MAX_ARRAY_SIZE  MaxArraySize (default 4, so tests exercise
#                                   droptrace's splitting of large arrays)
#   DROPTRACE_SLURM_WAIT_SECONDS    how long to wait for the node (default 60)
# Prints the node name when the cluster is up; exits 1 with one line on stderr
# otherwise.
set -euo pipefail

max_array_size="${DROPTRACE_SLURM_MAX_ARRAY_SIZE:-4}"
wait_seconds="${DROPTRACE_SLURM_WAIT_SECONDS:-60}"
conf=/etc/slurm/slurm.conf

fail() { echo "slurm-cluster: $*" >&2; exit 1; }

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || fail "needs root (or sudo) to install and start Slurm"
    sudo="sudo -n"
fi

# 1. Packages (the same way as scripts/ensure-deps.sh).
packages=(munge slurmctld slurmd slurm-client)
missing=()
for package in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed"; then
        missing+=("$package")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null || fail "needs ${missing[*]} (Debian/Ubuntu package names); install them with your package manager"
    echo "installing ${missing[*]}" >&2
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    # Package scripts may try to start services; without systemd that fails harmlessly.
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# 2. munge: a key owned by the munge user, munged running as that user.
$sudo install -d -o munge -g munge -m 0700 /etc/munge
$sudo install -d -o munge -g munge -m 0711 /var/lib/munge /var/log/munge
$sudo install -d -o munge -g munge -m 0755 /run/munge
if ! $sudo test -s /etc/munge/munge.key; then
    $sudo dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
fi
$sudo chown munge:munge /etc/munge/munge.key
$sudo chmod 0400 /etc/munge/munge.key
if ! munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
    $sudo runuser -u munge -- /usr/sbin/munged --force
    for _ in $(seq 1 50); do
        munge -n 2>/dev/null | unmunge >/dev/null 2>&1 && break
        sleep 0.1
    done
    munge -n 2>/dev/null | unmunge >/dev/null 2>&1 || fail "munged does not answer (see /var/log/munge/munged.log)"
fi

# 3. slurm.conf: one node with this machine's CPUs and memory.
node="$(hostname -s)"
hardware="$($sudo slurmd -C | head -1)"
cpus="$(sed -n 's/.* CPUs=\([0-9]*\).*/\1/p' <<<"$hardware")"
memory="$(sed -n 's/.* RealMemory=\([0-9]*\).*/\1/p' <<<"$hardware")"
[ -n "$cpus" ] && [ -n "$memory" ] || fail "cannot read CPUs and RealMemory from \`slurmd -C\`: $hardware"
# Leave the system some memory, as a site would.
memory=$(( memory > 1024 ? memory - 512 : memory ))
$sudo install -d -m 0755 /etc/slurm /var/spool/slurmctld /var/spool/slurmd /var/log/slurm /run/slurm
new_conf="$(cat <<EOF
# Written by droptrace's scripts/slurm-cluster.sh: a one-node cluster.
ClusterName=droptrace
SlurmctldHost=$node
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/spool/slurmctld
SlurmdSpoolDir=/var/spool/slurmd
SlurmctldPidFile=/run/slurm/slurmctld.pid
SlurmdPidFile=/run/slurm/slurmd.pid
SlurmctldLogFile=/var/log/slurm/slurmctld.log
SlurmdLogFile=/var/log/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
SchedulerParameters=sched_interval=1
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
ReturnToService=2
MaxArraySize=$max_array_size
MinJobAge=30
KillWait=5
SlurmctldTimeout=30
SlurmdTimeout=30
MpiDefault=none
NodeName=$node CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP OverSubscribe=NO
EOF
)"
changed=0
if ! $sudo test -f "$conf" || [ "$($sudo cat "$conf")" != "$new_conf" ]; then
    printf '%s\n' "$new_conf" | $sudo tee "$conf" >/dev/null
    changed=1
fi

# 4. The daemons.
running() { pgrep -x "$1" >/dev/null; }
if ! running slurmctld; then
    $sudo slurmctld
elif [ "$changed" -eq 1 ]; then
    $sudo scontrol reconfigure
fi
if ! running slurmd; then
    $sudo slurmd
fi

# 5. Wait until the node is idle (or busy: a running cluster is fine too).
deadline=$(( $(date +%s) + wait_seconds ))
state=""
while [ "$(date +%s)" -lt "$deadline" ]; do
    state="$(sinfo --noheader --nodes="$node" --format=%T 2>/dev/null | head -1 || true)"
    case "$state" in
        idle|mixed|allocated|completing) echo "$node"; exit 0 ;;
        down*|drain*|fail*) $sudo scontrol update nodename="$node" state=resume >/dev/null 2>&1 || true ;;
    esac
    sleep 1
done
fail "node $node is not idle after ${wait_seconds} s (state: ${state:-no answer from slurmctld}); see /var/log/slurm/slurmctld.log and slurmd.log"

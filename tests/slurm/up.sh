#!/usr/bin/env bash
# Bring up a single-node SLURM cluster on loopback (munged + slurmctld + slurmd), for tests.
#
#   tests/slurm/up.sh STATE_DIR      # needs root and apt-get (Debian/Ubuntu)
#   tests/slurm/down.sh STATE_DIR    # stops exactly the daemons this script started
#
# Installs Debian's slurm-wlm and munge if they are missing (services are not started by the
# packages), writes /etc/slurm/slurm.conf (SLURM's jobstep plugin strips SLURM_CONF, so the
# config must be at the default path; an existing file is backed up and restored by down.sh),
# starts the daemons in the foreground in the background and records their PIDs in
# STATE_DIR/pids. Exits 0 once the node is idle, non-zero with a message otherwise.
set -euo pipefail

STATE_DIR=${1:?usage: up.sh STATE_DIR}
CONF=/etc/slurm/slurm.conf
MARKER="# kernel-eft loopback test cluster"

die() { echo "slurm up: $*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "needs root"
command -v apt-get >/dev/null || die "needs apt-get"

install_packages() {
    export DEBIAN_FRONTEND=noninteractive
    # Packages must not start services in this container: the test starts the daemons itself.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy"
        chmod +x "$policy"
        created_policy=1
    fi
    # Package lists may be empty or stale on a fresh machine.
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
    if [[ $created_policy -eq 1 ]]; then rm -f "$policy"; fi
}

if ! command -v slurmctld >/dev/null || ! command -v slurmd >/dev/null || ! command -v munged >/dev/null; then
    echo "slurm up: installing slurm-wlm and munge" >&2
    install_packages
fi

mkdir -p "$STATE_DIR"/{state,spool,log}
STATE_DIR=$(cd "$STATE_DIR" && pwd)
if [[ -s $STATE_DIR/pids ]]; then die "$STATE_DIR/pids exists: run down.sh first"; fi
: >"$STATE_DIR/pids"

# munge: key and runtime directories owned by the munge user.
if [[ ! -s /etc/munge/munge.key ]]; then
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null ||
        dd if=/dev/urandom bs=1 count=1024 of=/etc/munge/munge.key 2>/dev/null
fi
chown munge:munge /etc/munge/munge.key
chmod 400 /etc/munge/munge.key
mkdir -p /run/munge /var/log/munge /var/lib/munge
chown munge:munge /run/munge /var/log/munge /var/lib/munge
chmod 755 /run/munge

# slurm.conf: keep a foreign one to restore it afterwards.
mkdir -p /etc/slurm
if [[ -e $CONF ]] && ! grep -q "^$MARKER" "$CONF"; then
    cp -p "$CONF" "$STATE_DIR/slurm.conf.orig"
fi
# Not plain nproc: it honours OMP_NUM_THREADS, which a caller may have set to 1 for its own BLAS.
CPUS=$(getconf _NPROCESSORS_ONLN)
MEM_MB=$(awk '/MemTotal/ {print int($2 / 1024 * 0.8)}' /proc/meminfo)
cat >"$CONF" <<EOF
$MARKER (tests/slurm/up.sh; removed by down.sh)
ClusterName=kerneleft
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$STATE_DIR/state
SlurmdSpoolDir=$STATE_DIR/spool
SlurmctldPidFile=$STATE_DIR/slurmctld.pid
SlurmdPidFile=$STATE_DIR/slurmd.pid
SlurmctldLogFile=$STATE_DIR/log/slurmctld.log
SlurmdLogFile=$STATE_DIR/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
MpiDefault=pmi2
ReturnToService=2
MinJobAge=600
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
NodeName=localhost CPUs=$CPUS RealMemory=$MEM_MB State=UNKNOWN
PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP
EOF

start() {  # start a daemon in the background and record its PID
    local name=$1
    shift
    "$@" >"$STATE_DIR/log/$name.out" 2>&1 &
    echo "$name $!" >>"$STATE_DIR/pids"
}

# setpriv execs munged directly, so the recorded PID is the daemon's own.
start munged setpriv --reuid=munge --regid=munge --init-groups munged --foreground
for _ in $(seq 50); do
    if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then break; fi
    sleep 0.1
done
munge -n </dev/null | unmunge >/dev/null 2>&1 || die "munged did not come up ($STATE_DIR/log/munged.out)"

start slurmctld slurmctld -D -i
start slurmd slurmd -D -N localhost

for _ in $(seq 150); do
    state=$(sinfo -h -n localhost -o %T 2>/dev/null || true)
    if [[ $state == idle* ]]; then
        echo "slurm up: node localhost idle (${CPUS} CPUs, ${MEM_MB} MB); state in $STATE_DIR" >&2
        exit 0
    fi
    sleep 0.2
done
die "node did not become idle (state '${state:-none}'); logs in $STATE_DIR/log"

#!/usr/bin/env bash
# A one-node Slurm cluster on this machine, for the real-Slurm tests (tests/test_slurm.py) and
# for trying GENSER_BACKEND=slurm by hand. Needs root; installs Debian's slurmctld, slurmd,
# slurm-client and munge with apt-get when they are missing; works without systemd.
#
#   bash tests/slurm/setup.sh            # install, configure, start (a no-op when already up)
#   bash tests/slurm/setup.sh --no-install   # the same, but exit 77 when the packages are missing
#   export SLURM_CONF=/var/tmp/genser-slurm/slurm.conf   # what it prints; sbatch needs it
#   bash tests/slurm/teardown.sh         # stop every daemon it started
#
# Everything lives under $GENSER_SLURM_DIR (default /var/tmp/genser-slurm): config, state, logs,
# pid files and a private munged, on ports of its own, so nothing in /etc or a site's own
# Slurm or munge is touched. The node is CPU-only: a job asking for a GPU is refused.
# Exit status 0 when the node is idle; 77 (the "skip" code) when this machine cannot run it.
set -euo pipefail

dir=${GENSER_SLURM_DIR:-/var/tmp/genser-slurm}
ctld_port=${GENSER_SLURM_PORT:-16817}          # slurmd listens on the next port
me=tests/slurm/setup.sh
install=true
[ "${1:-}" = --no-install ] && install=false

skip() { echo "${me}: cannot run Slurm here: $*" >&2; exit 77; }
die() { echo "${me}: error: $*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || skip "needs root (slurmd runs jobs as any user)"

# ---- packages ------------------------------------------------------------------------------
missing=()
for prog in slurmctld:slurmctld slurmd:slurmd sbatch:slurm-client munged:munge; do
    command -v "${prog%%:*}" >/dev/null 2>&1 || missing+=("${prog#*:}")
done
if [ ${#missing[@]} -gt 0 ]; then
    ${install} || skip "${missing[*]} not installed (bash tests/slurm/setup.sh installs them)"
    command -v apt-get >/dev/null 2>&1 || skip "no apt-get to install ${missing[*]}"
    echo "${me}: installing ${missing[*]} (apt-get)" >&2
    # policy-rc.d-less machines would start the packaged services; keep them from doing so.
    export DEBIAN_FRONTEND=noninteractive RUNLEVEL=1
    { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
        > "/tmp/genser-slurm-apt.log" 2>&1 \
        || skip "apt-get install ${missing[*]} failed (see /tmp/genser-slurm-apt.log)"
fi

# ---- configuration -------------------------------------------------------------------------
host=$(hostname -s)          # slurmd finds its node by this name; the controller must be it too
cpus=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)   # nproc alone obeys OMP_NUM_THREADS
mem_mb=$(( $(awk '/^MemTotal:/ {print $2}' /proc/meminfo) / 1024 ))
# Advertise at least 16 GB so that the recipes' default requests (egs/TEMPLATE/cmd.sh) are never
# refused on a small CI machine; config_overrides lets slurmd accept a RealMemory above the real.
node_mem=$(( mem_mb > 16384 ? mem_mb : 16384 ))
mkdir -p "${dir}/ctld" "${dir}/d" "${dir}/munge"
chmod 700 "${dir}/munge"
conf=${dir}/slurm.conf
new_conf=$(cat <<EOF
# Written by ${me}: a one-node test cluster. Regenerated on every run.
ClusterName=genser
SlurmctldHost=${host}(127.0.0.1)
SlurmctldPort=${ctld_port}
SlurmdPort=$(( ctld_port + 1 ))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=${dir}/munge/munge.socket
StateSaveLocation=${dir}/ctld
SlurmdSpoolDir=${dir}/d
SlurmctldPidFile=${dir}/slurmctld.pid
SlurmdPidFile=${dir}/slurmd.pid
SlurmctldLogFile=${dir}/slurmctld.log
SlurmdLogFile=${dir}/slurmd.log
# No cgroups (containers and systemd-less machines have none to give).
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SwitchType=switch/none
# Cores and memory are the consumable resources; a job without --mem gets DefMemPerCPU per CPU
# (without it, such a job would take the whole node).
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
SlurmdParameters=config_overrides
# Finished jobs leave the controller after 4 s (default 300); sbatch --wait polls at that pace.
MinJobAge=4
KillWait=5
ReturnToService=2
SlurmctldTimeout=30
SlurmdTimeout=60
NodeName=${host} NodeAddr=127.0.0.1 CPUs=${cpus} Boards=1 SocketsPerBoard=1 CoresPerSocket=${cpus} ThreadsPerCore=1 RealMemory=${node_mem} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
)
export SLURM_CONF=${conf}

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
node_state() { sinfo -h -n "${host}" -o %T 2>/dev/null || true; }

if [ -f "${conf}" ] && [ "$(cat "${conf}")" = "${new_conf}" ] \
        && alive "${dir}/munge/munged.pid" && alive "${dir}/slurmctld.pid" && alive "${dir}/slurmd.pid" \
        && [[ "$(node_state)" =~ ^(idle|mixed|allocated) ]]; then
    echo "${me}: cluster already up (node ${host}); export SLURM_CONF=${conf}" >&2
    exit 0
fi
# Something is missing or the configuration changed: start again from a clean state.
bash "$(dirname "$0")/teardown.sh" --quiet
printf '%s\n' "${new_conf}" > "${conf}.tmp" && mv "${conf}.tmp" "${conf}"

# ---- daemons -------------------------------------------------------------------------------
# A stale StateSaveLocation (clustername, job state) stops slurmctld from starting; the test
# cluster keeps no state between sessions.
rm -rf "${dir:?}/ctld/"* "${dir:?}/d/"*
[ -s "${dir}/munge/munge.key" ] || mungekey --create --keyfile="${dir}/munge/munge.key" 2>/dev/null \
    || dd if=/dev/urandom of="${dir}/munge/munge.key" bs=1024 count=1 status=none
chmod 400 "${dir}/munge/munge.key"
munged --force --socket="${dir}/munge/munge.socket" --key-file="${dir}/munge/munge.key" \
    --pid-file="${dir}/munge/munged.pid" --log-file="${dir}/munge/munged.log" \
    --seed-file="${dir}/munge/munged.seed" \
    || die "munged did not start (see ${dir}/munge/munged.log)"
slurmctld -f "${conf}" || die "slurmctld did not start (see ${dir}/slurmctld.log)"
slurmd -f "${conf}" || die "slurmd did not start (see ${dir}/slurmd.log)"

for _ in $(seq 1 120); do
    state=$(node_state)
    [[ "${state}" =~ ^idle ]] && break
    sleep 0.25
done
if ! [[ "${state}" =~ ^idle ]]; then
    tail -n 5 "${dir}/slurmctld.log" "${dir}/slurmd.log" >&2 || true
    die "node ${host} is '${state:-unknown}' after 30 s, not idle"
fi
echo "${me}: cluster up (node ${host}, ${cpus} CPUs, ${node_mem} MB); export SLURM_CONF=${conf}" >&2

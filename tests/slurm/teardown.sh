#!/usr/bin/env bash
# Stops the test cluster of tests/slurm/setup.sh: cancels its jobs, stops slurmd, slurmctld and
# its private munged (by their pid files under $GENSER_SLURM_DIR), and checks that none of them
# is left. Safe to run when nothing is running. --quiet: say nothing when there was nothing.
set -uo pipefail

dir=${GENSER_SLURM_DIR:-/var/tmp/genser-slurm}
me=tests/slurm/teardown.sh
quiet=false
[ "${1:-}" = --quiet ] && quiet=true
export SLURM_CONF=${dir}/slurm.conf

pid_of() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null && cat "$1"; }

# Jobs first, while the controller and slurmd still run: their steps end with them.
if pid=$(pid_of "${dir}/slurmctld.pid") && [ -f "${SLURM_CONF}" ]; then
    jobs=$(squeue -h -o %A 2>/dev/null | sort -u | tr '\n' ' ')
    if [ -n "${jobs// }" ]; then
        # shellcheck disable=SC2086
        scancel ${jobs} 2>/dev/null
        for _ in $(seq 1 60); do
            [ -z "$(squeue -h -o %A 2>/dev/null)" ] && break
            sleep 0.25
        done
    fi
fi

stopped=()
for name in slurmd slurmctld munge/munged; do
    pidfile=${dir}/${name}.pid
    pid=$(pid_of "${pidfile}") || continue
    kill -TERM "${pid}" 2>/dev/null
    for _ in $(seq 1 40); do
        kill -0 "${pid}" 2>/dev/null || break
        sleep 0.25
    done
    if kill -0 "${pid}" 2>/dev/null; then
        echo "${me}: ${name##*/} (pid ${pid}) ignored SIGTERM for 10 s; killing it" >&2
        kill -KILL "${pid}" 2>/dev/null
    fi
    rm -f "${pidfile}"
    stopped+=("${name##*/}")
done

# Job steps (slurmstepd) of this cluster run from its spool dir; none may outlive slurmd.
left=()
for p in /proc/[0-9]*; do
    exe=$(readlink "${p}/exe" 2>/dev/null) || continue
    case "${exe}" in
        */slurmstepd*|*/slurmd*|*/slurmctld*|*/munged) ;;
        *) continue ;;
    esac
    if tr '\0' '\n' < "${p}/environ" 2>/dev/null | grep -qx "SLURM_CONF=${SLURM_CONF}" \
            || grep -q "${dir}" "${p}/cmdline" 2>/dev/null \
            || [ "$(readlink "${p}/cwd" 2>/dev/null)" = "${dir}/d" ]; then
        left+=("${p#/proc/} (${exe##*/})")
    fi
done
if [ ${#left[@]} -gt 0 ]; then
    echo "${me}: error: still running after teardown: ${left[*]}" >&2
    exit 1
fi
if [ ${#stopped[@]} -gt 0 ] || ! ${quiet}; then
    echo "${me}: stopped ${stopped[*]:-nothing (no daemon was running)}" >&2
fi
exit 0

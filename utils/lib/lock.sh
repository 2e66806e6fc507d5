#!/usr/bin/env bash
# Sourced by egs/TEMPLATE/ser.sh: lock_dir DIR HINT, one run at a time per directory.
#
# flock(1) on DIR/.lock, released by the kernel when the last process holding the descriptor
# exits, in any way. The lock file says who holds it (genser/lock.py takes the same lock).
# Children inherit the descriptor, so workers left running by a killed recipe keep the lock:
# when the recorded holder is a dead process of this host, the lock is taken over (a fresh lock
# file replaces the old one) with a warning that names the dead holder and the processes that
# still have the old file open. The takeover runs under a lock on DIR itself, so two runs that
# find the same dead holder do not both take over.
#
# HINT ends the refusal: the way out for this kind of directory ("use another --exp_tag").
# $lock_owner (optional) describes this run in the lock file; the default is $0.

_lock_log() {
    if declare -F log > /dev/null; then log "$@"; else echo "$*" >&2; fi
}

# Pids (other than this shell) with FILE open, from /proc ([ -ef ]: same device and inode).
_lock_users() {
    local file=$1 fd pid pids=()
    for fd in /proc/[0-9]*/fd/*; do
        [ "${fd}" -ef "${file}" ] 2>/dev/null || continue
        pid=${fd#/proc/}
        pid=${pid%%/*}
        [ "${pid}" = "$$" ] || [ "${pid}" = "${BASHPID}" ] || pids+=("${pid}")
    done
    [ ${#pids[@]} -gt 0 ] && printf '%s\n' "${pids[@]}" | sort -un | paste -sd' '
    return 0
}

lock_dir() {
    local dir=$1 hint=$2 fd mutex holder pid host left
    mkdir -p "${dir}"
    exec {mutex}<"${dir}"
    flock "${mutex}"
    exec {fd}<>"${dir}/.lock"
    if ! flock -n "${fd}"; then
        holder=$(cat "${dir}/.lock" 2>/dev/null || true)
        read -r _ pid _ host _ <<< "${holder}"
        if [[ "${holder}" == "pid "* ]] && [ "${host}" = "$(hostname)" ] && ! kill -0 "${pid}" 2>/dev/null; then
            left=$(_lock_users "${dir}/.lock")
            exec {fd}>&-
            exec {fd}<>"${dir}/.lock.$$.new"
            flock -n "${fd}"
            mv -f "${dir}/.lock.$$.new" "${dir}/.lock"
            _lock_log "Warning: taking over the lock of ${dir} from a dead run (${holder})${left:+; processes it left behind still have the old lock file open and may still write into ${dir}: pids ${left}}"
        else
            exec {mutex}<&-
            _lock_log "Error: ${dir} is in use by ${holder:-another run}; wait for it to finish, or ${hint}"
            exit 1
        fi
    fi
    exec {mutex}<&-
    echo "pid $$ on $(hostname) since $(date '+%Y-%m-%dT%H:%M:%S'): ${lock_owner:-$0}" > "${dir}/.lock"
}

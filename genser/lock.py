"""Directory locks, so that two runs never write into one experiment or dump at the same time.

``flock(2)`` on ``<dir>/.lock``: the kernel drops the lock when the last process holding its
descriptor exits, even on SIGKILL. The file records who holds it, for the error of the run that
is refused. ``utils/lib/lock.sh`` (``lock_dir`` of ser.sh) takes the same lock from the shell.

A lock can outlive its holder: children that inherited the descriptor (workers left running
after the recipe was killed) keep it. When the recorded holder is a dead process on this host,
the lock is taken over: a fresh lock file replaces the old one, and a warning names the dead
holder and the processes that still have the old file open. The takeover happens under a lock
on the folder itself, so two runs that find the same dead holder do not both take over.
"""
import contextlib
import fcntl
import logging
import os
import re
import socket
import sys
import time
from pathlib import Path

logger = logging.getLogger(__name__)

_HOLDER = re.compile(r"^pid (\d+) on (\S+) since")


class LockError(RuntimeError):
    """The directory is held by another process."""


def holder_is_dead(text):
    """True when ``text`` (a lock file's content) names a process of this host that is gone."""
    match = _HOLDER.match(text)
    if not match or match.group(2) != socket.gethostname():
        return False
    try:
        os.kill(int(match.group(1)), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def processes_with_open(path):
    """Pids of the processes (readable in /proc) that have ``path`` open."""
    try:
        target = os.stat(path)
    except OSError:
        return []
    pids = []
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            for fd in fd_dir.iterdir():
                st = os.stat(fd)
                if (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                    pids.append(int(fd_dir.parent.name))
                    break
        except OSError:
            continue
    return sorted(set(pids) - {os.getpid()})


def _take_over(folder, path, holder):
    """A new lock file, locked, moved over ``path``; returns its descriptor."""
    left = processes_with_open(path)
    tmp = folder / f".lock.{os.getpid()}.new"
    fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.replace(tmp, path)
    logger.warning("%s: taking over the lock of a dead run (%s)%s", folder, holder,
                   f"; processes it left behind still have the old lock file open and may still "
                   f"write into {folder}: pids {' '.join(map(str, left))}" if left else "")
    return fd


@contextlib.contextmanager
def dir_lock(folder, hint="use another directory"):
    """Holds ``folder``/.lock for the duration of the block; raises LockError at once if taken.

    ``hint`` ends the error: how to get out of the way of the holder (e.g. "use another --exp_tag").
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    mutex = os.open(folder, os.O_RDONLY)
    fd = None
    try:
        fcntl.flock(mutex, fcntl.LOCK_EX)  # held only while the lock is taken, not by the block
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip()
            if not holder_is_dead(holder):
                raise LockError(f"{folder} is in use by {holder or 'another process'}; wait for it to "
                                f"finish, or {hint}") from None
            os.close(fd)
            fd = _take_over(folder, path, holder)
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        owner = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}: {' '.join(sys.argv)[:300]}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        os.close(mutex)
        mutex = None
        yield path
    finally:
        if mutex is not None:
            os.close(mutex)
        if fd is not None:
            os.close(fd)  # releases the flock

"""Directory locks, so that two runs never write into one experiment or dump at the same time.

``flock(2)`` on ``<dir>/.lock``: the kernel drops the lock when its holder exits, even on SIGKILL,
so a stale lock file never blocks the next run. The file records who holds it, for the error of
the run that is refused. ``lock_dir`` in egs/TEMPLATE/ser.sh takes the same lock from the shell
(flock(1)).
"""
import contextlib
import fcntl
import os
import socket
import sys
import time
from pathlib import Path


class LockError(RuntimeError):
    """The directory is held by another process."""


@contextlib.contextmanager
def dir_lock(folder):
    """Holds ``folder``/.lock for the duration of the block; raises LockError at once if taken."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 4096, 0).decode(errors="replace").strip() or "another process"
            raise LockError(f"{folder} is in use by {holder}; wait for it to finish, or use another "
                            f"directory") from None
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S")
        owner = f"pid {os.getpid()} on {socket.gethostname()} since {stamp}: {' '.join(sys.argv)[:300]}\n"
        os.ftruncate(fd, 0)
        os.pwrite(fd, owner.encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock

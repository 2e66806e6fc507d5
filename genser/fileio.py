"""Small file helpers: atomic writes and Kaldi-style "key value..." text files."""
import contextlib
import errno
import os
import tempfile
from pathlib import Path


class FileFormatError(ValueError):
    """A text file that does not follow the expected Kaldi layout (names file and line)."""


# errnos that mean "the destination cannot take the data": full disk, quota, file size limit,
# read-only file system, I/O error. The OS names none of them with the file being written.
WRITE_ERRNOS = frozenset(getattr(errno, name) for name in ("ENOSPC", "EFBIG", "EDQUOT", "EROFS", "EIO")
                         if hasattr(errno, name))


def write_error(exc, path):
    """``exc`` (an OSError from writing ``path``) as an OSError of the same errno naming ``path``.

    A bare "[Errno 28] No space left on device" from deep inside a job does not say which of the
    files being written (or which disk) is full. Other exceptions are returned unchanged.
    """
    if not isinstance(exc, OSError) or exc.errno not in WRITE_ERRNOS or str(path) in str(exc):
        return exc
    return OSError(exc.errno, f"cannot write {path}: {exc.strerror or exc}")


@contextlib.contextmanager
def atomic_open(path, mode="w", encoding="utf-8"):
    """Opens a temp file next to ``path``; on success it is ``os.replace``d into place.

    On an exception the temp file is removed and ``path`` is left untouched; a write error
    (ENOSPC, EFBIG, ... see WRITE_ERRNOS) is re-raised naming ``path``.
    """
    if not any(m in mode for m in "wax"):
        raise ValueError(f"atomic_open is for writing, got mode {mode!r} for {path}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise write_error(exc, path) from exc
    os.close(fd)
    mode = mode.replace("x", "w").replace("a", "w")
    try:
        try:
            kwargs = {} if "b" in mode else {"encoding": encoding}
            with open(tmp, mode, **kwargs) as f:
                yield f
            # mkstemp creates 0600; give the result the usual permissions (umask applied).
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
            os.replace(tmp, path)
        except OSError as exc:  # a write in the block, the flush at close, or the rename
            err = write_error(exc, path)
            if err is exc:
                raise
            raise err from exc
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_write(path, text, encoding="utf-8"):
    """Writes ``text`` (str or bytes) to ``path`` atomically."""
    with atomic_open(path, "wb" if isinstance(text, bytes) else "w", encoding=encoding) as f:
        f.write(text)


def read_kv(path):
    """Reads Kaldi "key value..." lines into an (insertion-ordered) dict of str -> str.

    The value is the rest of the line after the first whitespace run (may contain spaces, may be
    empty).  Blank lines are skipped; duplicate or empty keys raise FileFormatError naming the
    file and line.
    """
    path = Path(path)
    out = {}
    first_line = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            if line[0].isspace():
                raise FileFormatError(f"{path}:{lineno}: empty id (line starts with whitespace): "
                                      f"{line!r}")
            parts = line.split(None, 1)
            key = parts[0]
            value = parts[1].strip() if len(parts) > 1 else ""
            if key in out:
                raise FileFormatError(f"{path}:{lineno}: duplicate id {key!r} "
                                      f"(first on line {first_line[key]})")
            out[key] = value
            first_line[key] = lineno
    return out


def write_kv(path, mapping):
    """Writes ``mapping`` as "key value" lines sorted by key (C-locale byte order), atomically.

    Values that are lists/tuples are joined with spaces.
    """
    lines = []
    for key in sorted(mapping, key=_sort_key):
        key_s = str(key)
        if not key_s or any(c.isspace() for c in key_s):
            raise ValueError(f"{path}: invalid id {key_s!r} (empty or containing whitespace)")
        value = mapping[key]
        if isinstance(value, (list, tuple)):
            value = " ".join(str(v) for v in value)
        value = str(value)
        if "\n" in value:
            raise ValueError(f"{path}: value of {key_s!r} contains a newline")
        lines.append(f"{key_s} {value}".rstrip() + "\n")
    with atomic_open(path, "w") as f:
        f.writelines(lines)


def _sort_key(key):
    """Kaldi sorts with LC_ALL=C, i.e. by bytes; Python's str order matches it for UTF-8."""
    return str(key).encode("utf-8")


def read_list(path):
    """Reads one item per line (e.g. labels.emo), skipping blank lines; duplicates raise."""
    path = Path(path)
    items = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            item = line.strip()
            if not item:
                continue
            if item in items:
                raise FileFormatError(f"{path}:{lineno}: duplicate entry {item!r}")
            items.append(item)
    return items


def write_list(path, items):
    """Writes one item per line, in the given order, atomically."""
    with atomic_open(path, "w") as f:
        f.writelines(f"{item}\n" for item in items)


def read_identity(path):
    """The hash on the "identity <hash>" line of a train.done or of a decode's identity file
    (None if the file or the line is absent): what training and decoding record of a model."""
    path = Path(path)
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    return next((line.split(None, 1)[1].strip() for line in lines if line.startswith("identity ")), None)

"""Writing files safely: atomically, one writer per path, nothing stale left behind.

:class:`atomic_h5` is the only way the toolkit writes an HDF5 file:

* the file is written under a temporary name ``NAME.XXXXXXXX.tmp`` in the same
  folder and renamed to ``NAME`` only when complete, so nothing under a final
  name is ever partial (a crash, Ctrl-C or SIGKILL leaves at most a ``.tmp``);
* one writer per path at a time: an advisory lock (``fcntl.flock`` on
  ``NAME.lock``, released by the kernel when the holder dies, so a killed run
  never blocks the next one) makes a second concurrent writer fail at once
  with a clear error instead of racing the first to the rename;
* holding the lock, it removes the ``NAME.*.tmp`` files that killed writers
  of the same path left behind;
* ``overwrite=False`` refuses an existing ``NAME``.
"""
from __future__ import annotations

import errno
import fcntl
import os
import re
import tempfile

__all__ = ["atomic_h5", "open_h5", "PathLock", "PathBusyError", "stale_temporaries"]


def open_h5(path):
    """``h5py.File(path, "r")``, with a file that is not readable HDF5 reported as the
    ValueError every reader of the toolkit raises for it."""
    import h5py

    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ValueError(f"{path} is not a readable HDF5 file ({exc})") from None


class PathBusyError(RuntimeError):
    """Another process is writing the same path."""


class PathLock:
    """Exclusive, non-blocking advisory lock of ``path`` (on ``path + ".lock"``).

    The lock file is removed on release; a process that opened it just before
    the removal notices (the inode it locked is no longer the one at the path)
    and retries, so two writers can never both hold the lock of one path.
    """

    def __init__(self, path):
        self.path = os.path.abspath(os.fspath(path))
        self.lockfile = self.path + ".lock"
        self.fd = None

    def acquire(self) -> "PathLock":
        while True:
            fd = os.open(self.lockfile, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                    raise PathBusyError(f"another process is writing {self.path} (lock {self.lockfile} is held); "
                                        "wait for it or choose another output") from None
                raise
            try:
                same = os.fstat(fd).st_ino == os.stat(self.lockfile).st_ino
            except FileNotFoundError:
                same = False
            if same:
                self.fd = fd
                return self
            os.close(fd)  # the holder removed that lock file as we opened it: take the new one

    def release(self) -> None:
        if self.fd is not None:
            try:
                os.unlink(self.lockfile)
            except FileNotFoundError:
                pass
            os.close(self.fd)
            self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
        return False


def stale_temporaries(path) -> list[str]:
    """The temporary files that :class:`atomic_h5` writers of ``path`` left behind."""
    path = os.path.abspath(os.fspath(path))
    d, base = os.path.split(path)
    pat = re.compile(re.escape(base) + r"\.[A-Za-z0-9_]{8}\.tmp")
    try:
        return [os.path.join(d, n) for n in os.listdir(d) if pat.fullmatch(n)]
    except FileNotFoundError:
        return []


class atomic_h5:
    """Context manager: an ``h5py.File`` open for writing under a temporary name,
    renamed to ``path`` on success and removed on any exception (Ctrl-C included).

    overwrite : replace an existing ``path`` (default); False raises FileExistsError.
    protect : paths that must never be written (the inputs of a run): ValueError.
    """

    def __init__(self, path, *, overwrite: bool = True, protect=()):
        self.path = os.fspath(path)
        self.overwrite = overwrite
        self.protect = [os.fspath(p) for p in protect]

    def __enter__(self):
        import h5py

        target = os.path.abspath(self.path)
        for p in self.protect:
            if os.path.exists(p) and os.path.exists(target) and os.path.samefile(p, target) \
                    or os.path.abspath(p) == target:
                raise ValueError(f"refusing to write {self.path}: it is an input of this run ({p})")
        d = os.path.dirname(target)
        if not os.path.isdir(d):
            raise FileNotFoundError(f"cannot write {self.path}: the folder {d} does not exist")
        if os.path.isdir(target):
            raise IsADirectoryError(f"cannot write {self.path}: it is a folder")
        if not os.access(d, os.W_OK | os.X_OK):   # say so now (not after the run, not as the lock's errno)
            raise PermissionError(f"cannot write {self.path}: the folder {d} is not writable")
        self.lock = PathLock(target).acquire()
        try:
            if not self.overwrite and os.path.exists(target):
                raise FileExistsError(f"{self.path} exists; refusing to overwrite it (pass overwrite, "
                                      "--overwrite on the command line, or choose another name)")
            for stale in stale_temporaries(target):  # left by killed writers of this path
                os.unlink(stale)
            fd, self.tmp = tempfile.mkstemp(prefix=os.path.basename(target) + ".", suffix=".tmp", dir=d)
            os.close(fd)
            os.chmod(self.tmp, 0o666 & ~_umask())   # the mode any new file gets here, not mkstemp's 0600
            self.f = h5py.File(self.tmp, "w")
        except BaseException:
            self.lock.release()
            raise
        return self.f

    def __exit__(self, exc_type, exc, tb):
        try:
            try:
                self.f.close()
            finally:
                if exc_type is None:
                    os.replace(self.tmp, self.path)
                else:
                    os.unlink(self.tmp)
        except BaseException:
            if os.path.exists(self.tmp):
                os.unlink(self.tmp)
            raise
        finally:
            self.lock.release()
        return False


def _umask() -> int:
    """The process's umask (read by setting it and putting it back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask

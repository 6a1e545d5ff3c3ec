"""An OSError of the environment (full disk, read-only mount, permissions, ``ulimit``) as one
line naming the path, the line the CLI prints instead of a traceback.

The commands check what they can before writing (free space, folders, targets), and their
writes are atomic, so by the time such an error reaches the CLI no temporary is left; these
lines are the floor under everything the checks cannot foresee.
"""

from __future__ import annotations

import errno
import os
import re
import resource

# errno -> what to say after the path, with the fix where there is one.
_WHAT = {
    errno.ENOSPC: "disk full ({strerror}); free some space and run again",
    errno.EDQUOT: "disk quota exceeded ({strerror}); free some space and run again",
    errno.EROFS: "read-only file system ({strerror}); choose a writable place",
    errno.EACCES: "permission denied ({strerror}); choose a place you may write, or fix its "
                  "permissions",
    errno.EPERM: "operation not permitted ({strerror})",
    errno.EMFILE: "too many open files ({strerror}; ulimit -n is {nofile}); raise ulimit -n",
    errno.ENFILE: "too many open files in the system ({strerror})",
    errno.EFBIG: "file too large ({strerror}; ulimit -f is {fsize}); raise ulimit -f",
    errno.ENAMETOOLONG: "file name too long ({strerror}); choose a shorter name",
    errno.ENOMEM: "out of memory ({strerror})",
    errno.EIO: "input/output error ({strerror}); the disk or its connection may be failing",
    errno.ELOOP: "too many levels of symbolic links ({strerror})",
    errno.ENOENT: "no such file or folder ({strerror}); was it removed while the command ran?",
    errno.ENOTDIR: "a path component is not a folder ({strerror})",
    errno.EISDIR: "is a folder ({strerror})",
    errno.ENOTEMPTY: "folder not empty ({strerror})",
    errno.EEXIST: "already exists ({strerror})",
    errno.EXDEV: "on another file system ({strerror})",
}
# h5py reports the C library's error inside its message: "..., errno = 27, ...".
_H5_ERRNO = re.compile(r"errno = (\d+)")
_H5_NAME = re.compile(r"name = '([^']*)'")


def _limit(which: int) -> str:
    soft = resource.getrlimit(which)[0]
    return "unlimited" if soft == resource.RLIM_INFINITY else str(
        soft // 1024 if which == resource.RLIMIT_FSIZE else soft)  # ulimit -f counts KiB


def errno_of(e: OSError) -> int | None:
    if e.errno is not None:
        return e.errno
    m = _H5_ERRNO.search(str(e))
    return int(m.group(1)) if m else None


def describe(e: OSError) -> str | None:
    """``PATH: what went wrong (strerror); the fix``, or None for an error of no known kind."""
    code = errno_of(e)
    if code not in _WHAT:
        return None
    name = e.filename
    if name is None:
        m = _H5_NAME.search(str(e))
        name = m.group(1) if m else None
    where = os.fsdecode(name) if name is not None else "output"
    if e.filename2 is not None:
        where += f" -> {os.fsdecode(e.filename2)}"
    what = _WHAT[code].format(strerror=e.strerror or os.strerror(code),
                              nofile=_limit(resource.RLIMIT_NOFILE),
                              fsize=_limit(resource.RLIMIT_FSIZE))
    return " ".join(f"{where}: {what}".split())


def memory_limited() -> str:
    """``ulimit -v N`` (or -d) when an address-space limit is set, else ""."""
    for which, flag in ((resource.RLIMIT_AS, "-v"), (resource.RLIMIT_DATA, "-d")):
        soft = resource.getrlimit(which)[0]
        if soft != resource.RLIM_INFINITY:
            return f"ulimit {flag} {soft // 1024}"
    return ""

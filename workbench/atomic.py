"""Atomic writes: a directory (a checkpoint) or a file is replaced whole or not at all.

`atomic_directory(target)` yields a temporary directory beside `target`; on success its files are fsynced and
the two directories are exchanged with one `renameat2(RENAME_EXCHANGE)` (Linux), so at every instant `target`
holds either the complete old contents or the complete new ones, whatever kills the process. Files of the old
directory that the new one does not write are carried over (hard links, no copy). A failure leaves `target`
untouched and removes the temporary directory; a crash leaves it behind, and the next write cleans it up.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fnmatch
import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator, Sequence

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100
_TMP, _OLD = ".tmp-", ".old-"


def _libc_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    return fn


_renameat2 = _libc_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False where the system can't (then nothing changed)."""
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(err, f"renameat2({a}, {b}, RENAME_EXCHANGE) failed: {os.strerror(err)}")


def _umask_modes(root: Path) -> None:
    """Give the written files the mode of an ordinary new file (0666 less the umask): some writers (safetensors'
    `save_file`) create 0600 files, which other users of a shared checkpoint could not read."""
    umask = os.umask(0)
    os.umask(umask)
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            os.chmod(path, 0o666 & ~umask)


def fsync_tree(root: Path) -> None:
    """fsync every file under `root`, then the directories, so a power cut cannot reorder the swap before them."""
    for path in sorted(root.rglob("*"), key=lambda p: -len(p.parts)):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [*sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)), root]:
        _fsync_dir(path)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _siblings(target: Path, marker: str) -> list[Path]:
    return list(target.parent.glob(f".{target.name}{marker}*"))


def clean_stale(target: Path) -> None:
    """Remove what crashed writes of `target` left beside it (their temporary and swapped-out directories)."""
    for path in _siblings(target, _TMP) + _siblings(target, _OLD):
        shutil.rmtree(path, ignore_errors=True)


def _carry_over(old: Path, new: Path, superseded: Sequence[str]) -> None:
    """Hard-link (or copy) into `new` every file of `old` that `new` lacks and no `superseded` pattern names."""
    for path in old.rglob("*"):
        rel = path.relative_to(old)
        dest = new / rel
        if path.is_dir() or dest.exists() or any(fnmatch.fnmatch(rel.as_posix(), p) for p in superseded):
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike, superseded: Sequence[str] = ()) -> Iterator[Path]:
    """Write a directory atomically: fill the yielded temporary directory; it replaces `target` on success.

    Args:
        target: the directory to create or replace.
        superseded: glob patterns (relative to `target`) of old files the new contents replace even where it
            does not write a file of that name (e.g. `model-*.safetensors` shards of an earlier layout).
    """
    target = Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a directory")
    clean_stale(target)
    tmp = target.parent / f".{target.name}{_TMP}{os.getpid()}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
        _umask_modes(tmp)
        if target.exists():
            _carry_over(target, tmp, superseded)
        fsync_tree(tmp)
        if not target.exists():
            os.rename(tmp, target)
        elif exchange(tmp, target):
            shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old contents
        else:  # no atomic exchange here: two renames, the old directory kept until the new one is in place
            old = target.parent / f".{target.name}{_OLD}{uuid.uuid4().hex[:8]}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        _fsync_dir(target.parent)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace a file whole: write a temporary file beside it, fsync, rename over it."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}{_TMP}{uuid.uuid4().hex[:8]}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

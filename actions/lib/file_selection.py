"""Safe file selection: which files the pack may read, and reading them safely.

Only regular files under a configured allowed root are ever opened. Paths are
resolved (``realpath``) before the root check, so ``..`` and symlinks cannot
escape; the file is opened with ``O_NOFOLLOW`` (unless symlinks are allowed) and
``O_NONBLOCK`` (a FIFO swapped in cannot hang the action) and checked again on
the open descriptor with ``fstat``, so a file replaced between the check and the
open is still caught. Every refusal is an ``UnsafePathError`` with a reason.
"""
import fnmatch
import hashlib
import os
import stat
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from lib.errors import UnsafePathError

HASH_CHUNK = 1024 * 1024


class FilePolicy(NamedTuple):
    allowed_roots: Tuple[str, ...]
    max_file_size: int
    follow_symlinks: bool = False
    include_hidden: bool = False

    @classmethod
    def from_config(cls, ingest: dict) -> "FilePolicy":
        roots = tuple(os.path.realpath(r) for r in ingest.get("allowed_roots") or [])
        return cls(roots, int(ingest["max_file_size"]), bool(ingest.get("follow_symlinks")),
                   bool(ingest.get("include_hidden")))


class OpenedFile(NamedTuple):
    """A checked, open regular file; the caller closes ``handle``."""

    path: str          # the path as given (absolute, normalised)
    real_path: str     # where it really is
    size: int
    handle: "object"


def check_path(path: str, policy: FilePolicy) -> str:
    """Return the real path of ``path`` if it may be read, else raise UnsafePathError."""
    if not isinstance(path, str) or not path:
        raise UnsafePathError(str(path), "the path must be a non-empty string")
    if "\x00" in path:
        raise UnsafePathError(path.replace("\x00", "\\0"), "the path contains a NUL byte")
    if not os.path.isabs(path):
        raise UnsafePathError(path, "the path must be absolute")
    if ".." in path.replace("\\", "/").split("/"):
        raise UnsafePathError(path, "the path must not contain '..'")
    if not policy.allowed_roots:
        raise UnsafePathError(path, "no allowed roots are configured (ingest.allowed_roots is empty)")
    if os.path.islink(path) and not policy.follow_symlinks:
        raise UnsafePathError(path, "it is a symbolic link (ingest.follow_symlinks is false)")
    real = os.path.realpath(path)
    if not any(is_within(real, root) for root in policy.allowed_roots):
        raise UnsafePathError(path, "it is outside the allowed roots ({})".format(
            ", ".join(policy.allowed_roots)))
    return real


def is_within(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:
        return False


def open_checked(path: str, policy: FilePolicy) -> OpenedFile:
    """Open ``path`` for reading after every safety check; raise UnsafePathError otherwise."""
    real = check_path(path, policy)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    if not policy.follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        fd = os.open(real if policy.follow_symlinks else path, flags)
    except FileNotFoundError:
        raise UnsafePathError(path, "no such file")
    except PermissionError:
        raise UnsafePathError(path, "it is not readable (permission denied)")
    except OSError as exc:
        raise UnsafePathError(path, "it cannot be opened ({})".format(exc.strerror or exc))
    try:
        size = _check_descriptor(path, fd, policy)
        _check_same_file(path, fd, real)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(os.path.normpath(path), real, size, handle)


def _check_same_file(path: str, fd: int, real: str) -> None:
    """The descriptor must be the file whose real path was checked (no swap in between)."""
    opened = os.fstat(fd)
    try:
        checked = os.stat(real)
    except OSError:
        checked = None
    if checked is None or (opened.st_dev, opened.st_ino) != (checked.st_dev, checked.st_ino):
        raise UnsafePathError(path, "it changed while being opened")


def _check_descriptor(path: str, fd: int, policy: FilePolicy) -> int:
    info = os.fstat(fd)
    mode = info.st_mode
    if stat.S_ISDIR(mode):
        raise UnsafePathError(path, "it is a directory")
    if stat.S_ISFIFO(mode):
        raise UnsafePathError(path, "it is a FIFO (named pipe)")
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        raise UnsafePathError(path, "it is a device file")
    if stat.S_ISSOCK(mode):
        raise UnsafePathError(path, "it is a socket")
    if not stat.S_ISREG(mode):
        raise UnsafePathError(path, "it is not a regular file")
    if info.st_size == 0:
        raise UnsafePathError(path, "it is empty")
    if info.st_size > policy.max_file_size:
        limit = "over the {} byte limit (ingest.max_file_size)".format(policy.max_file_size)
        raise UnsafePathError(path, "it is {} bytes, {}".format(info.st_size, limit), group=limit)
    # clear O_NONBLOCK again: regular-file reads are unaffected but be explicit
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return info.st_size


def sha256_of(handle) -> str:
    """Hash an open binary file from the start and rewind it for the upload."""
    digest = hashlib.sha256()
    handle.seek(0)
    for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
        digest.update(chunk)
    handle.seek(0)
    return digest.hexdigest()


class WalkEntry(NamedTuple):
    path: str
    skip_reason: Optional[str]  # None when the file is a candidate


def walk_directory(directory: str, policy: FilePolicy, include: Sequence[str] = ("*",),
                   exclude: Sequence[str] = ()) -> Iterator[WalkEntry]:
    """Yield every file under ``directory`` in a stable order, with why it is skipped if it is.

    Globs match the path relative to ``directory`` or the bare file name.
    Symbolic links are reported as skipped unless ``follow_symlinks``; even
    then a link whose target leaves the allowed roots is refused later by
    ``open_checked``. Directory loops cannot happen: linked directories are
    entered only when following links, and each real directory is entered once.
    """
    check_path(directory, policy._replace(follow_symlinks=True))
    if not os.path.isdir(directory):
        raise UnsafePathError(directory, "it is not a directory")
    seen = set()
    stack: List[str] = [directory]
    while stack:
        current = stack.pop()
        real = os.path.realpath(current)
        if real in seen:
            continue
        seen.add(real)
        try:
            entries = sorted(os.scandir(current), key=lambda e: e.name)
        except OSError as exc:
            yield WalkEntry(current, "directory not readable ({})".format(exc.strerror or exc))
            continue
        subdirs = []
        for entry in entries:
            result = _classify(entry, directory, policy, include, exclude)
            if result == "dir":
                subdirs.append(entry.path)
            elif result is not None:
                yield result
        stack.extend(reversed(subdirs))


def _classify(entry, top: str, policy: FilePolicy, include: Sequence[str], exclude: Sequence[str]):
    hidden = entry.name.startswith(".") and not policy.include_hidden
    if _is_dir(entry, policy):
        return None if hidden else "dir"  # hidden directories are not entered
    relative = os.path.relpath(entry.path, top)
    if not _matches(relative, entry.name, include):
        return None  # not asked for: not reported at all
    if hidden:
        return WalkEntry(entry.path, "hidden (ingest.include_hidden is false)")
    if entry.is_symlink() and not policy.follow_symlinks:
        return WalkEntry(entry.path, "symbolic link (ingest.follow_symlinks is false)")
    if exclude and _matches(relative, entry.name, exclude):
        return WalkEntry(entry.path, "excluded by pattern")
    return WalkEntry(entry.path, None)


def _is_dir(entry, policy: FilePolicy) -> bool:
    try:
        return entry.is_dir(follow_symlinks=policy.follow_symlinks)
    except OSError:
        return False


def _matches(relative: str, name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(relative, p) or fnmatch.fnmatchcase(name, p) for p in patterns)

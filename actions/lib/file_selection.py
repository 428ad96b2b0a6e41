"""Safe file selection: which files the pack may read, and reading them safely.

Only regular files under a configured allowed root are ever opened. Paths are
resolved (``realpath``) before the root check, so ``..`` and symlinks cannot
escape. The resolved path is then opened by walking down from the allowed root
one component at a time, each opened relative to its parent's descriptor with
``O_NOFOLLOW`` (``openat``): a directory swapped for a symbolic link after the
check cannot redirect the open outside the root, since ``O_NOFOLLOW`` on the
final open alone guards only the last component. The file is opened with
``O_NONBLOCK`` (a FIFO swapped in cannot hang the action) and checked again on
the open descriptor with ``fstat``. Every refusal is an ``UnsafePathError`` with
a reason.
"""
import errno
import fnmatch
import hashlib
import os
import stat
import tempfile
from typing import Iterator, List, NamedTuple, Optional, Sequence, Tuple

from lib.errors import UnsafePathError

HASH_CHUNK = 1024 * 1024
SPOOL_MEMORY = 8 * 1024 * 1024  # a snapshot larger than this goes to a private temporary file


class FilePolicy(NamedTuple):
    allowed_roots: Tuple[str, ...]
    max_file_size: int
    follow_symlinks: bool = False
    include_hidden: bool = False
    allow_hardlinks: bool = False

    @classmethod
    def from_config(cls, ingest: dict) -> "FilePolicy":
        roots = tuple(os.path.realpath(r) for r in ingest.get("allowed_roots") or [])
        return cls(roots, int(ingest["max_file_size"]), bool(ingest.get("follow_symlinks")),
                   bool(ingest.get("include_hidden")), bool(ingest.get("allow_hardlinks")))


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
    root = max((r for r in policy.allowed_roots if is_within(real, r)), key=len)
    try:
        fd = _open_beneath(root, real, flags)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR, errno.EMLINK):
            raise UnsafePathError(path, "it changed while being opened (a directory or the file "
                                        "became a symbolic link)")
        _raise_open_error(path, exc)
    try:
        size = _check_descriptor(path, fd, policy)
        _check_same_file(path, fd, real)
        handle = os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise
    return OpenedFile(os.path.normpath(path), real, size, handle)


_DIRECTORY_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)


def _open_beneath(root: str, real: str, flags: int) -> int:
    """Open ``real`` (a resolved path under ``root``) component by component from ``root``,
    never following a symbolic link on the way (``openat`` with ``O_NOFOLLOW``)."""
    if os.open not in os.supports_dir_fd:  # no openat here: one open, then the same-file check
        return os.open(real, flags | _NOFOLLOW)
    parts = [p for p in os.path.relpath(real, root).split(os.sep) if p not in ("", ".")]
    if not parts:
        raise OSError(errno.EISDIR, "it is the allowed root itself")
    dir_fd = os.open(root, _DIRECTORY_FLAGS)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, _DIRECTORY_FLAGS | _NOFOLLOW, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        return os.open(parts[-1], flags | _NOFOLLOW, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)


def _raise_open_error(path: str, exc: OSError) -> None:
    if isinstance(exc, FileNotFoundError):
        raise UnsafePathError(path, "no such file")
    if isinstance(exc, PermissionError):
        raise UnsafePathError(path, "it is not readable (permission denied)")
    if exc.errno == errno.EISDIR:
        raise UnsafePathError(path, "it is a directory")
    raise UnsafePathError(path, "it cannot be opened ({})".format(exc.strerror or exc))


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
    if info.st_nlink > 1 and not policy.allow_hardlinks:
        # a hard link needs no access to the target's directory: anyone who can write to a
        # shared allowed root could link a file from elsewhere on the same file system into it
        raise UnsafePathError(path, "it has {} hard links (ingest.allow_hardlinks is false)".format(
            info.st_nlink), group="it has several hard links (ingest.allow_hardlinks is false)")
    if info.st_size == 0:
        raise UnsafePathError(path, "it is empty")
    if info.st_size > policy.max_file_size:
        limit = "over the {} byte limit (ingest.max_file_size)".format(policy.max_file_size)
        raise UnsafePathError(path, "it is {} bytes, {}".format(info.st_size, limit), group=limit)
    # clear O_NONBLOCK again: regular-file reads are unaffected but be explicit
    if hasattr(os, "set_blocking"):
        os.set_blocking(fd, True)
    return info.st_size


class Snapshot(NamedTuple):
    """The bytes that are hashed and uploaded: one read of the file, in memory or spooled."""

    sha256: str
    size: int
    handle: "object"  # rewound; the caller closes it


def snapshot(opened: OpenedFile, max_file_size: int) -> Snapshot:
    """Read the opened file once, at most its checked size plus one byte, hashing as it goes.

    The copy (``SpooledTemporaryFile``: in memory up to ``SPOOL_MEMORY`` bytes, then a
    private temporary file) is what gets uploaded, so the recorded sha256 is the sha256 of
    the bytes sent. A file that grew or shrank since ``open_checked`` measured it, or that
    is now over ``max_file_size``, is refused: it changed while being read.
    """
    limit = min(opened.size, max_file_size)
    spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_MEMORY)
    try:
        digest = hashlib.sha256()
        remaining = limit + 1  # one byte more than allowed tells a file that grew
        opened.handle.seek(0)
        while remaining > 0:
            chunk = opened.handle.read(min(HASH_CHUNK, remaining))
            if not chunk:
                break
            remaining -= len(chunk)
            digest.update(chunk)
            spool.write(chunk)
        read = limit + 1 - remaining
        if read != opened.size or os.fstat(opened.handle.fileno()).st_size != opened.size:
            raise UnsafePathError(opened.path, "it changed while being read ({} bytes when checked, "
                                               "{} read)".format(opened.size, read))
        spool.seek(0)
    except BaseException:
        spool.close()
        raise
    return Snapshot(digest.hexdigest(), read, spool)


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

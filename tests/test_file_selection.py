"""Safe file selection on a real directory tree: every refusal has its reason."""
import hashlib
import os
import stat

import pytest

from lib.errors import UnsafePathError
from lib.file_selection import FilePolicy, check_path, open_checked, snapshot, walk_directory


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "quarantine"
    outside = tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    outside.mkdir()
    (root / "a.exe").write_bytes(b"MZ evil payload")
    (root / "sub" / "b.doc").write_bytes(b"document")
    (root / ".hidden").write_bytes(b"hidden")
    (root / "empty.bin").write_bytes(b"")
    (root / "big.bin").write_bytes(b"x" * 2048)
    (outside / "secret.txt").write_bytes(b"top secret")
    return root, outside


def policy(root, **kw):
    return FilePolicy(allowed_roots=(os.path.realpath(str(root)),), max_file_size=kw.pop("max_file_size", 1024), **kw)


def refusal(path, pol):
    with pytest.raises(UnsafePathError) as caught:
        opened = open_checked(str(path), pol)
        opened.handle.close()
    return caught.value.reason


def test_a_regular_file_under_a_root_opens_and_hashes(tree):
    root, _ = tree
    opened = open_checked(str(root / "a.exe"), policy(root))
    with opened.handle:
        assert opened.size == 15
        copy = snapshot(opened, 1024)
    with copy.handle:
        assert copy.sha256 == hashlib.sha256(b"MZ evil payload").hexdigest() and copy.size == 15
        assert copy.handle.read() == b"MZ evil payload"  # rewound for the upload


@pytest.mark.parametrize("make_path, reason", [
    (lambda r, o: str(o / "secret.txt"), "it is outside the allowed roots"),
    (lambda r, o: str(r) + "/../outside/secret.txt", "the path must not contain '..'"),
    (lambda r, o: "quarantine/a.exe", "the path must be absolute"),
    (lambda r, o: str(r / "missing"), "no such file"),
    (lambda r, o: str(r / "sub"), "it is a directory"),
    (lambda r, o: str(r / "empty.bin"), "it is empty"),
    (lambda r, o: str(r / "big.bin"), "it is 2048 bytes, over the 1024 byte limit (ingest.max_file_size)"),
    (lambda r, o: str(r / "a.exe") + "\x00.txt", "the path contains a NUL byte"),
    (lambda r, o: "", "the path must be a non-empty string"),
])
def test_refusals(tree, make_path, reason):
    root, outside = tree
    assert refusal(make_path(root, outside), policy(root)).startswith(reason)


def test_no_configured_roots_refuses_everything(tree):
    root, _ = tree
    pol = FilePolicy(allowed_roots=(), max_file_size=1024)
    assert refusal(root / "a.exe", pol).startswith("no allowed roots are configured")


def test_symlink_escape_is_refused_even_when_links_are_followed(tree):
    root, outside = tree
    os.symlink(str(outside / "secret.txt"), str(root / "link.txt"))
    assert refusal(root / "link.txt", policy(root)).startswith("it is a symbolic link")
    assert refusal(root / "link.txt", policy(root, follow_symlinks=True)).startswith(
        "it is outside the allowed roots")


def test_symlinked_directory_escape_is_refused(tree):
    root, outside = tree
    os.symlink(str(outside), str(root / "jump"))
    assert refusal(root / "jump" / "secret.txt", policy(root)).startswith("it is outside the allowed roots")


def test_symlink_inside_the_root_is_allowed_only_when_following(tree):
    root, _ = tree
    os.symlink(str(root / "a.exe"), str(root / "alias.exe"))
    assert refusal(root / "alias.exe", policy(root)).startswith("it is a symbolic link")
    opened = open_checked(str(root / "alias.exe"), policy(root, follow_symlinks=True))
    opened.handle.close()
    assert opened.real_path == os.path.realpath(str(root / "a.exe"))


def test_fifo_is_refused_without_blocking(tree):
    root, _ = tree
    os.mkfifo(str(root / "pipe"))
    assert refusal(root / "pipe", policy(root)) == "it is a FIFO (named pipe)"


def test_device_file_is_refused(tree):
    root, _ = tree
    try:
        os.mknod(str(root / "null"), stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except (PermissionError, OSError):
        pytest.skip("cannot create a device node here")
    assert refusal(root / "null", policy(root)) == "it is a device file"


def test_unreadable_file_is_refused(tree, monkeypatch):
    root, _ = tree
    target = root / "locked.bin"
    target.write_bytes(b"locked")
    target.chmod(0)
    if os.geteuid() == 0:  # root reads anything: make the kernel's answer what a service account gets
        real_open = os.open

        def deny(path, flags, *args):
            if str(path) == str(target):
                raise PermissionError(13, "Permission denied")
            return real_open(path, flags, *args)
        monkeypatch.setattr(os, "open", deny)
    assert refusal(target, policy(root)) == "it is not readable (permission denied)"


def test_message_names_the_path_and_reason(tree):
    root, outside = tree
    with pytest.raises(UnsafePathError) as caught:
        check_path(str(outside / "secret.txt"), policy(root))
    assert str(caught.value).startswith("Refused '{}': it is outside the allowed roots".format(
        outside / "secret.txt"))


def test_walk_reports_candidates_and_skips_in_stable_order(tree):
    root, outside = tree
    os.symlink(str(outside), str(root / "jump"))
    entries = list(walk_directory(str(root), policy(root), include=("*",), exclude=("*.doc",)))
    rel = [(os.path.relpath(e.path, str(root)), e.skip_reason) for e in entries]
    assert rel == [
        (".hidden", "hidden (ingest.include_hidden is false)"),
        ("a.exe", None),
        ("big.bin", None),
        ("empty.bin", None),
        ("jump", "symbolic link (ingest.follow_symlinks is false)"),
        ("sub/b.doc", "excluded by pattern"),
    ]


def test_walk_include_globs_and_hidden_policy(tree):
    root, _ = tree
    entries = list(walk_directory(str(root), policy(root, include_hidden=True), include=("*.exe", ".h*")))
    assert [os.path.relpath(e.path, str(root)) for e in entries] == [".hidden", "a.exe"]


def test_walk_survives_a_symlink_loop_when_following(tree):
    root, _ = tree
    os.symlink(str(root), str(root / "sub" / "loop"))
    entries = list(walk_directory(str(root), policy(root, follow_symlinks=True), include=("*.doc",)))
    assert [os.path.relpath(e.path, str(root)) for e in entries] == ["sub/b.doc"]


def test_walk_refuses_a_directory_outside_the_roots(tree):
    root, outside = tree
    with pytest.raises(UnsafePathError, match="outside the allowed roots"):
        list(walk_directory(str(outside), policy(root)))


# -- a directory swapped for a symlink between the check and the open --------------

@pytest.mark.parametrize("follow_symlinks", [False, True])
@pytest.mark.parametrize("swapped", ["parent", "grandparent", "file"])
def test_a_path_component_swapped_after_the_check_cannot_open_outside_the_roots(
        tmp_path, monkeypatch, follow_symlinks, swapped):
    import lib.file_selection as selection
    root = tmp_path / "root"
    (root / "a" / "b").mkdir(parents=True)
    (root / "a" / "b" / "report.txt").write_bytes(b"harmless")
    outside = tmp_path / "secret"
    (outside / "b").mkdir(parents=True)
    (outside / "b" / "report.txt").write_bytes(b"SECRET")
    (outside / "report.txt").write_bytes(b"SECRET")
    real_check = selection.check_path

    def check_then_swap(path, pol):
        checked = real_check(path, pol)  # the check passes on the honest tree ...
        target = {"parent": (root / "a" / "b", outside / "b"), "grandparent": (root / "a", outside),
                  "file": (root / "a" / "b" / "report.txt", outside / "b" / "report.txt")}[swapped]
        os.rename(str(target[0]), str(target[0]) + ".moved")  # ... then the attacker swaps it
        os.symlink(str(target[1]), str(target[0]))
        return checked
    monkeypatch.setattr(selection, "check_path", check_then_swap)
    with pytest.raises(UnsafePathError, match="changed while being opened"):
        opened = open_checked(str(root / "a" / "b" / "report.txt"),
                              policy(root, follow_symlinks=follow_symlinks))
        opened.handle.close()  # pragma: no cover - only reached when the swap worked


def test_an_honest_nested_file_still_opens_and_reads(tmp_path):
    root = tmp_path / "root"
    (root / "x" / "y").mkdir(parents=True)
    (root / "x" / "y" / "f.bin").write_bytes(b"payload")
    opened = open_checked(str(root / "x" / "y" / "f.bin"), policy(root))
    with opened.handle:
        assert opened.handle.read() == b"payload" and opened.size == 7



@pytest.mark.parametrize("mode, change", [
    ("ab", lambda f: f.write(b"appended after the size check")),  # grew
    ("r+b", lambda f: f.truncate(4)),                              # shrank
])
def test_a_file_that_changes_after_the_size_check_is_refused(tmp_path, mode, change):
    root = tmp_path / "root"
    root.mkdir()
    path = root / "grows.bin"
    path.write_bytes(b"x" * 100)
    opened = open_checked(str(path), policy(root, max_file_size=120))
    with open(str(path), mode) as writer:
        change(writer)
    with opened.handle, pytest.raises(UnsafePathError, match="changed while being read"):
        snapshot(opened, 120)


def test_a_file_growing_past_the_limit_uploads_nothing_past_the_limit(tmp_path):
    """Even a writer racing the read: at most the checked size plus one byte is ever read."""
    root = tmp_path / "root"
    root.mkdir()
    path = root / "big.bin"
    path.write_bytes(b"y" * 50)
    opened = open_checked(str(path), policy(root, max_file_size=60))
    path.write_bytes(b"y" * 5000)  # the same inode, now far larger
    read = []
    real_read = opened.handle.read
    opened.handle.read = lambda n=-1: read.append(n) or real_read(n)
    with pytest.raises(UnsafePathError, match="changed while being read"):
        snapshot(opened, 60)
    assert sum(read) <= 51
    opened.handle.close()


def test_the_snapshot_is_what_is_hashed_and_uploaded(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    path = root / "f.bin"
    path.write_bytes(b"original bytes")
    opened = open_checked(str(path), policy(root))
    with opened.handle:
        copy = snapshot(opened, 1024)
    path.write_bytes(b"rewritten later")  # after the read: the upload is unaffected
    with copy.handle:
        assert copy.handle.read() == b"original bytes"
        assert copy.sha256 == hashlib.sha256(b"original bytes").hexdigest()


@pytest.mark.parametrize("allow, opens", [(False, False), (True, True)])
def test_files_with_several_hard_links_follow_the_policy(tmp_path, allow, opens):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "elsewhere.txt"
    outside.write_bytes(b"not meant for upload")
    os.link(str(outside), str(root / "linked.txt"))  # no path check can see where it came from
    pol = policy(root, allow_hardlinks=allow)
    if opens:
        opened = open_checked(str(root / "linked.txt"), pol)
        opened.handle.close()
    else:
        with pytest.raises(UnsafePathError, match="2 hard links"):
            open_checked(str(root / "linked.txt"), pol)

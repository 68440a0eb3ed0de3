"""The one path walk (storage/pathwalk.py) against hostile trees.

Every case runs on each kind of tree the walk is used with: a host directory
(DirTree: container roots, build contexts), unpacked layers merged as
overlayfs does (OverlayTree: image lookups), and the directory fds of the
layer applier (layers_paths.Resolver). Each expected answer is also checked
against the kernel itself: openat2(RESOLVE_IN_ROOT) resolves a path exactly as
a process chrooted into the tree would, so the table below cannot drift from
Linux's rules (`..` clamped at the root, absolute links restart there, ELOOP
past 40 links, ENOTDIR through a file).
"""
from __future__ import annotations

import ctypes
import errno
import io
import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from storage.errors import LayerError, PathEscape, SymlinkLoop, UnsafePathError
from storage.layers import apply_layer
from storage.layers_paths import Resolver
from storage.pathwalk import REFUSE, DirTree, OverlayTree, walk
from tests.conftest import need_root
from tests.tarballs import make_tar

LONG = "n" * 255        # the longest name Linux allows
TOO_LONG = "n" * 256

# (kind, path[, symlink target]); parents are listed before their children
TREE = [
    ("d", "real"), ("f", "real/x"), ("d", "etc"), ("f", "plain"), ("d", "d"),
    ("l", "abs", "/real"),                        # an absolute symlink
    ("l", "up", "../../../.."),                   # a `../` chain above the root
    ("l", "d/rel", "../real"),                    # a symlink in an intermediate component
    ("l", "l1", "l2"), ("l", "l2", "/real"),      # symlink to symlink
    ("l", "loop1", "loop2"), ("l", "loop2", "loop1"), ("l", "self", "self"),
    ("l", "dang", "/nowhere/deeper"),             # dangling
    ("l", "esc", "/nonexistent" + "/.." * 8 + "/etc"),  # dangling, then climbing back
    ("l", "tofile", "plain"),
    ("f", LONG),
    # 40 links in one lookup are allowed, 41 are not (Linux's MAXSYMLINKS)
    *[("l", f"c{i}", f"c{i + 1}" if i < 39 else "/real") for i in range(40)],
    *[("l", f"e{i}", f"e{i + 1}" if i < 40 else "/real") for i in range(41)],
    # ... counted over the whole path: 20 links to reach sdir, then 20 or 21 more
    ("d", "sdir"),
    *[("l", f"s{i}", f"s{i + 1}" if i < 19 else "/sdir") for i in range(20)],
    *[("l", f"sdir/t{i}", f"t{i + 1}" if i < 20 else "/real") for i in range(21)],
]


@dataclass
class Case:
    path: str
    state: str                        # found, missing, notdir, loop
    parts: tuple[str, ...] | None = None
    follow: bool = True
    climbs: bool = False              # `..` above the root on the way: REFUSE raises
    kernel: bool = True               # the kernel gives the same answer (not where mkdir -p semantics differ)


CASES = {
    "root": Case("/", "found", ()),
    "dotdot-at-root": Case("/../..", "found", (), climbs=True),
    "plain-path": Case("/real/x", "found", ("real", "x")),
    "absolute-link": Case("/abs/x", "found", ("real", "x")),
    "absolute-link-not-followed": Case("/abs", "found", ("abs",), follow=False),
    "dotdot-chain": Case("/up/real/x", "found", ("real", "x"), climbs=True),
    "named-dotdot-above-root": Case("/../../real/x", "found", ("real", "x"), climbs=True),
    "link-in-middle": Case("/d/rel/x", "found", ("real", "x")),
    "link-to-link": Case("/l1/x", "found", ("real", "x")),
    "loop": Case("/loop1", "loop"),
    "loop-in-middle": Case("/loop1/x", "loop"),
    "self-loop-not-followed": Case("/self", "found", ("self",), follow=False),
    "file-as-directory": Case("/plain/sub", "notdir", ("plain", "sub")),
    "file-then-dotdot": Case("/plain/../real", "notdir", ("real",)),
    "link-to-file-as-directory": Case("/tofile/sub", "notdir", ("plain", "sub")),
    "missing": Case("/real/none", "missing", ("real", "none")),
    "missing-deeper": Case("/none/a/b", "missing", ("none", "a", "b")),
    "dangling": Case("/dang", "missing", ("nowhere", "deeper")),
    "dangling-climbing-back": Case("/esc", "found", ("etc",), climbs=True, kernel=False),
    "dangling-climbing-back-missing": Case("/esc/x", "missing", ("etc", "x"), climbs=True),
    "missing-then-back-onto-a-link": Case("/none/../abs/x", "found", ("real", "x"), kernel=False),
    "40-links": Case("/c0/x", "found", ("real", "x")),
    "41-links": Case("/e0/x", "loop"),
    "40-links-over-two-components": Case("/s0/t1/x", "found", ("real", "x")),
    "41-links-over-two-components": Case("/s0/t0/x", "loop"),
    "longest-name": Case("/" + LONG, "found", (LONG,)),
    "too-long-name": Case("/" + TOO_LONG, "missing", (TOO_LONG,)),
}


def make(root: Path, entries) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for kind, path, *rest in entries:
        p = root / path
        if kind == "d":
            p.mkdir()
        elif kind == "f":
            p.write_text(path)
        else:
            os.symlink(rest[0], p)


# -- the kernel as the reference ---------------------------------------------------------
_libc = ctypes.CDLL(None, use_errno=True)
_SYS_OPENAT2 = 437  # the same number on every architecture (asm-generic)
_RESOLVE_IN_ROOT = 0x10


class _OpenHow(ctypes.Structure):
    _fields_ = [("flags", ctypes.c_uint64), ("mode", ctypes.c_uint64), ("resolve", ctypes.c_uint64)]


def kernel(root: Path, path: str, follow: bool) -> tuple[str, tuple[str, ...] | None]:
    """How Linux resolves `path` with `root` as its root: (state, real parts)."""
    dfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
    how = _OpenHow(os.O_PATH | os.O_CLOEXEC | (0 if follow else os.O_NOFOLLOW), 0, _RESOLVE_IN_ROOT)
    try:
        for _ in range(100):  # EAGAIN: a rename or mount elsewhere on the machine raced the lookup; again
            fd = _libc.syscall(_SYS_OPENAT2, dfd, path.encode(), ctypes.byref(how), ctypes.sizeof(how))
            if fd >= 0 or ctypes.get_errno() != errno.EAGAIN:
                break
        if fd < 0:
            err = ctypes.get_errno()
            return {errno.ENOENT: "missing", errno.ENAMETOOLONG: "missing", errno.ENOTDIR: "notdir",
                    errno.ELOOP: "loop"}[err], None
        real = os.readlink(f"/proc/self/fd/{fd}")
        os.close(fd)
    finally:
        os.close(dfd)
    rel = os.path.relpath(real, root)
    return "found", () if rel == "." else tuple(rel.split("/"))


# -- the trees ----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def host_tree(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("pathwalk") / "root"
    make(root, TREE)
    return root


@pytest.fixture(params=["dir", "overlay", "applier"])
def tree(request, host_tree, tmp_path):
    """The same hostile tree, seen through each kind of tree the walk resolves in."""
    if request.param == "dir":
        yield DirTree(host_tree)
    elif request.param == "overlay":
        # split over three layers: the walk must merge them to see the tree at all
        top, mid = tmp_path / "top", tmp_path / "mid"
        make(mid, [e for e in TREE if e[0] == "d" or e[1].startswith(("c", "s", "real"))])
        make(top, [e for e in TREE if e[0] == "d" and e[1] in ("real", "sdir")])
        yield OverlayTree([top, mid, host_tree])
    else:
        fd = os.open(host_tree, os.O_RDONLY | os.O_DIRECTORY)
        r = Resolver(fd)
        yield r
        r.close()
        os.close(fd)


@pytest.mark.parametrize("name", CASES)
def test_hostile_paths(tree, host_tree, name):
    case = CASES[name]
    if case.kernel:
        state, parts = kernel(host_tree, case.path, case.follow)
        assert state == case.state and (state != "found" or parts == case.parts), "the table disagrees with Linux"
    if case.state == "loop":
        with pytest.raises(SymlinkLoop, match="too many levels of symbolic links"):
            walk(tree, case.path, follow_last=case.follow)
        return
    w = walk(tree, case.path, follow_last=case.follow)
    assert w.parts == case.parts
    assert (w.node is not None, w.missing, w.notdir) == (case.state == "found", case.state == "missing",
                                                         case.state == "notdir")
    if case.climbs:
        with pytest.raises(PathEscape):
            walk(tree, case.path, dotdot=REFUSE, follow_last=case.follow)
    else:
        assert walk(tree, case.path, dotdot=REFUSE, follow_last=case.follow) == w


def test_a_refused_climb_names_the_link(host_tree):
    with pytest.raises(PathEscape, match=r"'/up/real/x' leads outside the root through a symlink to '(\.\./){3}\.\.'"):
        walk(DirTree(host_tree), "/up/real/x", dotdot=REFUSE)


def test_a_walk_resumes_with_the_links_already_followed(host_tree):
    first = walk(DirTree(host_tree), "s0")
    assert first.parts == ("sdir",) and first.links == 20
    assert walk(DirTree(host_tree), "t1", start=first.parts, links=first.links).parts == ("real",)
    with pytest.raises(SymlinkLoop):
        walk(DirTree(host_tree), "t0", start=first.parts, links=first.links)


# -- overlays: whiteouts and opaque directories hide what is below --------------------------
@pytest.fixture
def overlay(tmp_path) -> OverlayTree:
    need_root()  # whiteouts are 0/0 character devices, opaque markers trusted.* xattrs
    lower, upper = tmp_path / "lower", tmp_path / "upper"
    make(lower, [("d", "etc"), ("f", "etc/passwd"), ("d", "usr"), ("d", "usr/bin"), ("f", "usr/bin/sh"),
                 ("l", "bin", "/usr/bin"), ("d", "opq"), ("f", "opq/old"), ("d", "dir"), ("f", "dir/x"),
                 ("d", "real"), ("f", "real/x"), ("d", "swap"), ("f", "swap/x")])
    make(upper, [("d", "etc"), ("d", "opq"), ("f", "opq/new"), ("f", "dir"), ("l", "swap", "/real")])
    os.mknod(upper / "etc/passwd", 0o600 | 0o020000, os.makedev(0, 0))
    os.mknod(upper / "bin", 0o600 | 0o020000, os.makedev(0, 0))
    os.setxattr(upper / "opq", "trusted.overlay.opaque", b"y")
    return OverlayTree([upper, lower])


@pytest.mark.parametrize("path,state,parts", [
    ("/etc/passwd", "missing", ("etc", "passwd")),     # a whiteout hides the lower file
    ("/bin/sh", "missing", ("bin", "sh")),             # ... and the lower symlink: not followed
    ("/usr/bin/sh", "found", ("usr", "bin", "sh")),
    ("/opq/old", "missing", ("opq", "old")),            # an opaque directory hides the lower one
    ("/opq/new", "found", ("opq", "new")),
    ("/dir/x", "notdir", ("dir", "x")),                 # a file above a directory hides it
    ("/swap/x", "found", ("real", "x")),                # a symlink above a directory replaces it
])
def test_whiteouts_and_opaque_directories(overlay, path, state, parts):
    w = walk(overlay, path)
    assert w.parts == parts and (w.node is not None, w.notdir) == (state == "found", state == "notdir")
    if state == "found":
        assert w.node.host_path.startswith(overlay.layers[0] if parts[0] == "opq" else overlay.layers[1])


def test_overlay_listing_hides_whiteouts_and_what_is_below_opaque_dirs(overlay):
    assert sorted(overlay.listdir(("opq",))) == ["new"]
    assert "passwd" not in overlay.listdir(("etc",)) and "bin" not in overlay.listdir(())


# -- the layer applier: links counted per lookup, as Linux counts them -----------------------
def test_applier_counts_links_over_the_whole_entry_path(tmp_path):
    chain = [("dir", "sdir"), ("dir", "real")]
    chain += [("symlink", f"s{i}", f"s{i + 1}" if i < 19 else "/sdir") for i in range(20)]
    chain += [("symlink", f"sdir/t{i}", f"t{i + 1}" if i < 20 else "/real") for i in range(21)]
    ok = apply_layer(io.BytesIO(make_tar([*chain, ("file", "s0/t1/f", b"x")])), tmp_path / "ok")
    assert ok.entries == len(chain) + 1 and (tmp_path / "ok/real/f").read_bytes() == b"x"
    with pytest.raises(LayerError, match="too many levels of symlinks"):
        apply_layer(io.BytesIO(make_tar([*chain, ("file", "s0/t0/f", b"x")])), tmp_path / "loop")


def test_applier_refuses_what_the_clamping_walk_would_clamp(tmp_path):
    with pytest.raises(UnsafePathError, match=r"'esc/x' goes through a symlink to .* outside the target"):
        apply_layer(io.BytesIO(make_tar([("dir", "etc"), ("symlink", "esc", "/nonexistent/../../etc"),
                                         ("file", "esc/x", b"x")])), tmp_path / "t")

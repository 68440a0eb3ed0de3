"""The tar format, as layers use it: ustar headers plus PAX extended headers.

soko writes its own headers instead of going through `tarfile` so that the
bytes are fully determined by the inputs (no uname/gname, integer mtimes,
sorted PAX records) and so that file data can be read straight into the
output buffers. Reading accepts what other tools write: ustar, PAX (per-file
and global), GNU long names and links, base-256 numbers.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Iterator

from .errors import LayerError

BLOCK = 512
END_OF_ARCHIVE = bytes(2 * BLOCK)

REG, AREG, LNK, SYM, CHR, BLK, DIR, FIFO, CONT = b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7"
PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK = b"x", b"g", b"L", b"K"
HEADER_ONLY = (LNK, SYM, DIR, CHR, BLK, FIFO)

_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s6s2s32s32s8s8s155s12s")
_PAX_NAME = b"././@PaxHeader"
_MAX_OCT8 = 0o7777777
_MAX_OCT12 = 0o77777777777


# -- writing -------------------------------------------------------------------

def _pax_record(key: bytes, value: bytes) -> bytes:
    """`"%d key=value\n"`, where the length counts its own digits."""
    body = b" " + key + b"=" + value + b"\n"
    digits = len(str(len(body)))
    while len(str(len(body) + digits)) != digits:
        digits += 1
    return b"%d" % (len(body) + digits) + body


_CHKSUM_BLANK = sum(b"        ")  # the checksum field counts as spaces
_MAGIC = b"ustar\x0000" + bytes(64)    # magic, version, empty uname and gname
_MAGIC_SUM = sum(_MAGIC)
_NUL = bytes(155 + 12)                 # prefix and padding


def _ustar(name: bytes, mode: int, uid: int, gid: int, size: int, mtime: int, typeflag: bytes,
           linkname: bytes, devmajor: int, devminor: int) -> bytes:
    """One ustar block. Thousands per layer: put together from pieces, the checksum summed
    over what varies only (the constant parts' sums are known)."""
    name = name[:100]
    linkname = linkname[:100]
    numbers = b"%07o\0%07o\0%07o\0%011o\0%011o\0" % (mode, uid, gid, size, mtime)
    devices = b"%07o\0%07o\0" % (devmajor, devminor)
    chksum = sum(name) + sum(numbers) + _CHKSUM_BLANK + typeflag[0] + sum(linkname) + _MAGIC_SUM + sum(devices)
    return b"".join((name, bytes(100 - len(name)), numbers, b"%06o\0 " % chksum, typeflag, linkname,
                     bytes(100 - len(linkname)), _MAGIC, devices, _NUL))


def encode_header(name: bytes, *, mode: int, uid: int = 0, gid: int = 0, size: int = 0,
                  mtime: int = 0, typeflag: bytes = REG, linkname: bytes = b"",
                  devmajor: int = 0, devminor: int = 0,
                  xattrs: dict[bytes, bytes] | None = None) -> bytes:
    """The header block(s) of one entry: a PAX header first when anything
    does not fit ustar (long names, big numbers, xattrs), then the ustar block."""
    pax: dict[bytes, bytes] = {}
    if len(name) > 100:
        pax[b"path"] = name
        name = name[:100]
    if len(linkname) > 100:
        pax[b"linkpath"] = linkname
        linkname = linkname[:100]
    if size > _MAX_OCT12:
        pax[b"size"] = b"%d" % size
        size = 0
    if not 0 <= mtime <= _MAX_OCT12:
        pax[b"mtime"] = b"%d" % mtime
        mtime = 0 if mtime < 0 else _MAX_OCT12
    if uid > _MAX_OCT8:
        pax[b"uid"] = b"%d" % uid
        uid = 0
    if gid > _MAX_OCT8:
        pax[b"gid"] = b"%d" % gid
        gid = 0
    if xattrs:
        for key, value in xattrs.items():
            pax[b"SCHILY.xattr." + key] = value
    head = b""
    if pax:
        if any(not _is_utf8(v) for k, v in pax.items() if k in (b"path", b"linkpath")):
            pax[b"hdrcharset"] = b"BINARY"
        records = b"".join(_pax_record(k, pax[k]) for k in sorted(pax))
        head = (_ustar(_PAX_NAME, 0o644, 0, 0, len(records), 0, PAX, b"", 0, 0)
                + records + bytes(-len(records) % BLOCK))
    return head + _ustar(name, mode & 0o7777, uid, gid, size, mtime, typeflag, linkname,
                         devmajor, devminor)


def _is_utf8(b: bytes) -> bool:
    try:
        b.decode("utf-8")
        return True
    except UnicodeDecodeError:
        return False


# -- reading -------------------------------------------------------------------

@dataclass
class Entry:
    """One member of a tar stream, after PAX and GNU extensions are folded in."""
    name: bytes
    typeflag: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: bytes = b""
    devmajor: int = 0
    devminor: int = 0
    xattrs: dict[str, bytes] = field(default_factory=dict)
    offset: int = 0  # of its header in the uncompressed stream, for messages


class ChunkStream:
    """Reads exact byte counts out of an iterator of chunks, without joining them."""

    def __init__(self, chunks: Iterator[bytes]):
        self._it = iter(chunks)
        self._cur = memoryview(b"")
        self._pos = 0
        self.offset = 0  # bytes consumed so far

    def _next(self) -> bool:
        for chunk in self._it:
            if chunk:
                self._cur, self._pos = memoryview(chunk), 0
                return True
        return False

    def read(self, n: int) -> bytes:
        """Up to `n` bytes; fewer only at the end of the stream."""
        avail = len(self._cur) - self._pos
        if avail >= n:
            data = self._cur[self._pos:self._pos + n].tobytes()
            self._pos += n
            self.offset += n
            return data
        parts = []
        while n:
            if self._pos >= len(self._cur) and not self._next():
                break
            take = min(n, len(self._cur) - self._pos)
            parts.append(self._cur[self._pos:self._pos + take])
            self._pos += take
            self.offset += take
            n -= take
        return b"".join(parts)

    def pieces(self, n: int) -> Iterator[memoryview]:
        """Yield exactly `n` bytes as views into the chunks; LayerError if the stream ends first."""
        while n:
            if self._pos >= len(self._cur) and not self._next():
                raise LayerError(f"truncated tar stream (at byte {self.offset})")
            take = min(n, len(self._cur) - self._pos)
            view = self._cur[self._pos:self._pos + take]
            self._pos += take
            self.offset += take
            n -= take
            yield view

    def skip(self, n: int) -> None:
        for _ in self.pieces(n):
            pass

    def drain(self) -> None:
        """Consume the rest (so digests computed upstream cover every byte)."""
        self._cur, self._pos = memoryview(b""), 0
        for chunk in self._it:
            self.offset += len(chunk)


def _num(field: bytes, what: str, offset: int) -> int:
    if field and field[0] & 0x80:  # GNU base-256, two's complement when 0x40 is set too
        top = 1 << (8 * len(field) - 1)
        value = int.from_bytes(field, "big") & ~top
        return value - top if field[0] & 0x40 else value
    text = field.split(b"\0", 1)[0].strip(b" ")
    try:
        return int(text, 8) if text else 0
    except ValueError:
        raise LayerError(f"corrupt tar header at byte {offset}: bad {what} field") from None


def _parse_pax(data: bytes, offset: int) -> dict[bytes, bytes]:
    records: dict[bytes, bytes] = {}
    pos = 0
    while pos < len(data):
        if data[pos] == 0:  # padding
            break
        sp = data.find(b" ", pos)
        try:
            length = int(data[pos:sp]) if sp > pos else 0
        except ValueError:
            length = 0
        record = data[sp + 1:pos + length]
        if sp < 0 or length <= sp - pos or not record.endswith(b"\n") or b"=" not in record:
            raise LayerError(f"corrupt PAX header at byte {offset}")
        key, value = record[:-1].split(b"=", 1)
        records[key] = value
        pos += length
    return records


def _pax_time_ns(value: bytes, offset: int) -> int:
    try:
        text = value.decode("ascii")
        neg = text.startswith("-")
        whole, _, frac = text.lstrip("-").partition(".")
        ns = int(whole or "0") * 1_000_000_000 + int((frac + "000000000")[:9] or "0")
        return -ns if neg else ns
    except ValueError:
        raise LayerError(f"corrupt PAX mtime at byte {offset}") from None


def iter_entries(stream: ChunkStream) -> Iterator[Entry]:
    """Entries of a tar stream. The consumer reads each entry's data with
    `stream.pieces(entry.size)` or leaves it; what is left is skipped."""
    global_pax: dict[bytes, bytes] = {}
    pending: dict[bytes, bytes] = {}
    long_name: bytes | None = None
    long_link: bytes | None = None
    while True:
        offset = stream.offset
        block = stream.read(BLOCK)
        if len(block) < BLOCK:
            if block or pending or long_name is not None or long_link is not None:
                raise LayerError(f"truncated tar stream (at byte {offset})")
            return  # EOF without end-of-archive blocks: tolerated, as GNU tar does
        if block.count(0) == BLOCK:
            return
        fields = _USTAR.unpack(block)
        (name, mode, uid, gid, size, mtime, chksum, typeflag, linkname, magic, _version,
         _uname, _gname, devmajor, devminor, prefix, _pad) = fields
        expected = _num(chksum, "checksum", offset)
        unsigned = sum(block) - sum(block[148:156]) + 256  # the field counts as spaces
        if expected != unsigned:
            signed = sum(struct.unpack("148b", block[:148])) + 256 + \
                sum(struct.unpack("356b", block[156:]))
            if expected != signed:
                raise LayerError(f"corrupt tar header at byte {offset}: bad checksum")
        size_n = _num(size, "size", offset)
        if size_n < 0:
            raise LayerError(f"corrupt tar header at byte {offset}: negative size")
        if typeflag in (PAX, PAX_GLOBAL, GNU_LONGNAME, GNU_LONGLINK):
            if size_n > 16 << 20:
                raise LayerError(f"oversized extended header at byte {offset}")
            data = b"".join(v.tobytes() for v in stream.pieces(size_n))
            stream.skip(-size_n % BLOCK)
            if typeflag == PAX:
                pending.update(_parse_pax(data, offset))
            elif typeflag == PAX_GLOBAL:
                global_pax.update(_parse_pax(data, offset))
            elif typeflag == GNU_LONGNAME:
                long_name = data.split(b"\0", 1)[0]
            else:
                long_link = data.split(b"\0", 1)[0]
            continue
        name = name.split(b"\0", 1)[0]
        if magic == b"ustar\0":
            prefix = prefix.split(b"\0", 1)[0]
            if prefix:
                name = prefix + b"/" + name
        pax = {**global_pax, **pending} if global_pax else pending
        entry = Entry(
            name=long_name if long_name is not None else name,
            typeflag=typeflag,
            mode=_num(mode, "mode", offset),
            uid=_num(uid, "uid", offset),
            gid=_num(gid, "gid", offset),
            size=size_n,
            mtime_ns=_num(mtime, "mtime", offset) * 1_000_000_000,
            linkname=long_link if long_link is not None else linkname.split(b"\0", 1)[0],
            devmajor=_num(devmajor, "devmajor", offset) if typeflag in (CHR, BLK) else 0,
            devminor=_num(devminor, "devminor", offset) if typeflag in (CHR, BLK) else 0,
            offset=offset,
        )
        if pax:
            _apply_pax(entry, pax, offset)
        pending = {}
        long_name = long_link = None
        if entry.size < 0:
            raise LayerError(f"corrupt tar header at byte {offset}: negative size")
        if entry.typeflag in HEADER_ONLY:
            entry.size = 0  # as Go and Python read them: these types carry no data
        before = stream.offset
        yield entry
        consumed = stream.offset - before
        stream.skip(entry.size - consumed + (-entry.size % BLOCK))


def _apply_pax(entry: Entry, pax: dict[bytes, bytes], offset: int) -> None:
    for key, value in pax.items():
        if key == b"path":
            entry.name = value
        elif key == b"linkpath":
            entry.linkname = value
        elif key == b"size":
            entry.size = _pax_int(value, "size", offset)
        elif key == b"uid":
            entry.uid = _pax_int(value, "uid", offset)
        elif key == b"gid":
            entry.gid = _pax_int(value, "gid", offset)
        elif key == b"mtime":
            entry.mtime_ns = _pax_time_ns(value, offset)
        elif key.startswith(b"SCHILY.xattr."):
            entry.xattrs[key[13:].decode("utf-8", "surrogateescape")] = value
        elif key.startswith(b"GNU.sparse."):
            raise LayerError(f"sparse file at byte {offset} is not supported in layers")


def _pax_int(value: bytes, what: str, offset: int) -> int:
    try:
        return int(value)
    except ValueError:
        raise LayerError(f"corrupt PAX {what} at byte {offset}") from None

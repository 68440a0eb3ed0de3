"""The thread that reads a big body from the socket (sockbody.SocketBodies._pump),
driven directly over a socketpair into a real FileWriter: where the pieces land
in the file and how receiving overlaps hashing. The HTTP side (takeover,
keep-alive, cut bodies) is in test_socket_bodies.py."""
from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from registry.server.config import Limits
from registry.server.sockbody import PIECE, RING, SocketBodies
from storage.blobs import BlobStore
from storage.content.dirwriter import FileWriter


class RecordingWriter(FileWriter):
    """A FileWriter that notes where each store() starts and how long it is."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stores: list[tuple[int, int]] = []

    def store(self, data) -> int:
        self.stores.append((self.offset, len(data)))
        return super().store(data)


def _pump(bodies: SocketBodies, writer: FileWriter, first: bytes, rest: bytes) -> None:
    """Run the pump on one end of a socketpair while a thread sends `rest` into the other."""
    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    sender = threading.Thread(target=theirs.sendall, args=(rest,))
    sender.start()
    try:
        bodies._pump(ours, [first] if first else [], len(rest), writer, threading.Event())
    finally:
        sender.join()
        ours.close()
        theirs.close()


def test_pieces_after_the_first_are_stored_on_piece_boundaries(tmp_path: Path):
    """aiohttp hands over an odd number of bytes read with the headers; the
    pieces read from the socket after them must start on PIECE boundaries of
    the file (whole pages for the page cache), and the data stays whole."""
    bodies = SocketBodies(Limits())
    writer = RecordingWriter(BlobStore(tmp_path), "up")
    first = os.urandom(65536 - 333)
    rest = os.urandom(3 * PIECE + 4321)
    head = len(first)
    try:
        _pump(bodies, writer, first, rest)
        assert writer.stores[0] == (0, head)
        assert writer.stores[1][0] == head and head + writer.stores[1][1] <= PIECE, writer.stores
        unaligned = [(at, n) for at, n in writer.stores[2:] if at % PIECE]
        assert not unaligned, writer.stores
        assert writer.digest == "sha256:" + hashlib.sha256(first + rest).hexdigest()
        writer.flush_sync()
        assert writer.tmp.read_bytes() == first + rest
    finally:
        writer.close_sync()
        bodies.close()


class GatedWriter(RecordingWriter):
    """Its first hash() waits until `gate` opens: hashing as slow as we like."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.hashes = 0

    def hash(self, data) -> None:
        self.hashes += 1
        if self.hashes == 1:
            assert self.gate.wait(30)
        super().hash(data)


def test_receiving_runs_ahead_of_hashing_without_touching_a_buffer_being_hashed(tmp_path: Path):
    """While the first piece is still being hashed, the pump goes on receiving
    and storing into its other buffers (RING of them), and then waits: the
    buffer being hashed is not refilled. The digest comes out right."""
    bodies = SocketBodies(Limits())
    writer = GatedWriter(BlobStore(tmp_path), "up")
    rest = os.urandom((RING + 3) * PIECE)
    done = threading.Event()
    pump = threading.Thread(target=lambda: (_pump(bodies, writer, b"", rest), done.set()))
    pump.start()
    try:
        deadline = time.monotonic() + 10
        while len(writer.stores) < RING and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.3)  # time enough to overrun the ring if it would
        assert len(writer.stores) == RING and writer.hashes == 1, (len(writer.stores), writer.hashes)
        writer.gate.set()
        pump.join(30)
        assert done.is_set()
        assert writer.digest == "sha256:" + hashlib.sha256(rest).hexdigest()
        writer.flush_sync()
        assert writer.tmp.read_bytes() == rest
    finally:
        writer.gate.set()
        pump.join(30)
        writer.close_sync()
        bodies.close()

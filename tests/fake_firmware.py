"""A Python stand-in for the firmware's serial server, for link tests.

It parses the frames the host writes and queues replies the way
firmware_examples/cortex_m/main.c does, for an "identity" model whose output
is its input. Hooks make it misbehave: swallow requests, damage replies,
reset, or fault.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

from toolkit.device import (
    CMD_INFO,
    CMD_INVOKE,
    CMD_READ_COUNTS,
    CMD_READ_OUTPUT,
    CMD_WRITE_INPUT,
    MSG_BOOT,
    MSG_BUSY,
    MSG_FAULT,
    MSG_NAK,
    REPLY_BIT,
    FrameReader,
    encode_frame,
)

SIZE = 100
LAYERS = 3


class FakeFirmware:
    """Quacks like a pyserial port; `behaviour(kind, frame)` may change a
    reply frame (return bytes) or drop it (return b"")."""

    def __init__(self, behaviour: Callable[[int, bytes], bytes] | None = None, crc: int = 7):
        self.timeout: float | None = 0.05
        self.behaviour = behaviour or (lambda kind, frame: frame)
        self.crc = crc
        self.reader = FrameReader()
        self.pending = bytearray()
        self.buffer = bytearray(SIZE)
        self.invokes = 0
        self.requests: list[int] = []
        self.closed = False

    @property
    def in_waiting(self) -> int:
        return len(self.pending)

    def read(self, size: int = 1) -> bytes:
        data = bytes(self.pending[:size])
        del self.pending[:size]
        return data

    def close(self) -> None:
        self.closed = True

    def send(self, kind: int, seq: int, payload: bytes) -> None:
        self.pending += self.behaviour(kind, encode_frame(kind, seq, payload))

    def boot(self) -> None:
        self.send(MSG_BOOT, 0, struct.pack("<HI", 1, self.crc))

    def write(self, data: bytes) -> int:
        self.reader.feed(data)
        damaged = self.reader.damaged
        while (frame := self.reader.next_frame()) is not None:
            self.handle(*frame)
        if self.reader.damaged != damaged:
            self.send(MSG_NAK, 0, b"\x01")
        return len(data)

    def handle(self, kind: int, seq: int, payload: bytes) -> None:
        self.requests.append(kind)
        reply = kind | REPLY_BIT
        if kind == CMD_INFO:
            info = struct.pack(
                "<BHHIIIIIBBB", 0, 1, 64, self.crc, 25_000_000, LAYERS, 64, 2048, 1, 1, 1
            )
            self.send(reply, seq, info + struct.pack("<II", SIZE, SIZE))
        elif kind == CMD_WRITE_INPUT:
            index, offset = struct.unpack_from("<BI", payload)
            data = payload[5:]
            self.buffer[offset : offset + len(data)] = data
            self.send(reply, seq, b"\x00")
        elif kind == CMD_INVOKE:
            self.invokes += 1
            self.send(MSG_BUSY, seq, b"\x00")
            self.send(reply, seq, b"\x00" + struct.pack("<III", 1000, 0, 300))
        elif kind == CMD_READ_OUTPUT:
            index, offset, count = struct.unpack_from("<BIH", payload)
            self.send(reply, seq, b"\x00" + bytes(self.buffer[offset : offset + count]))
        elif kind == CMD_READ_COUNTS:
            first, count = struct.unpack_from("<IH", payload)
            counts = [10 * (first + i + 1) for i in range(count)]
            self.send(reply, seq, b"\x00" + struct.pack(f"<{count}I", *counts))
        else:
            self.send(reply, seq, b"\x02")


def fault_frame() -> bytes:
    return encode_frame(MSG_FAULT, 0, struct.pack("<I", 3))

"""The host side of the firmware's serial protocol, and QEMU as a board.

`Device` drives the serial server of firmware_examples/cortex_m over any
pyserial port: a `socket://` URL (QEMU, or a proxy in tests), a pty, or a
board's `/dev/ttyACM0`. The frame format is described in the firmware's
protocol.h. Every wait has a deadline and every failure a bounded number of
retries. A damaged or missing reply is requested again and a device reset
restarts the run. When the retries are spent, the error names what failed.

`QemuBoard` starts qemu-system-arm on an ELF with its serial line on a TCP
socket on 127.0.0.1 and with `-icount shift=0`, so the SysTick counts that
the firmware returns are instruction counts.
"""

from __future__ import annotations

import os
import socket
import struct
import subprocess
import tempfile
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from toolkit.errors import ToolkitError

PROTOCOL_VERSION = 1
SYNC = b"\xa5\x5a"
HEADER = struct.Struct("<BBH")
CRC = struct.Struct("<I")
REPLY_BIT = 0x80
MAX_PAYLOAD = 4096

CMD_INFO = 0x01
CMD_WRITE_INPUT = 0x02
CMD_INVOKE = 0x03
CMD_READ_OUTPUT = 0x04
CMD_READ_COUNTS = 0x05
CMD_INVOKE_LAYER = 0x06
CMD_READ_LAYER = 0x07
MSG_BUSY = 0x7D
MSG_FAULT = 0x7E
MSG_BOOT = 0x7F
MSG_NAK = 0xFF

COMMAND_NAMES = {
    CMD_INFO: "INFO",
    CMD_WRITE_INPUT: "WRITE_INPUT",
    CMD_INVOKE: "INVOKE",
    CMD_READ_OUTPUT: "READ_OUTPUT",
    CMD_READ_COUNTS: "READ_COUNTS",
    CMD_INVOKE_LAYER: "INVOKE_LAYER",
    CMD_READ_LAYER: "READ_LAYER",
}
STATUS_TEXT = {
    1: "the device received a damaged frame",
    2: "the firmware does not know this command (a different protocol version?)",
    3: "an argument is out of range (index, offset or size)",
    4: "the model's parameter check failed on the device; deploy and build again",
    5: "the frame is longer than the firmware's receive buffer",
}
EXCEPTIONS = {2: "NMI", 3: "HardFault", 4: "MemManage", 5: "BusFault", 6: "UsageFault"}


def encode_frame(kind: int, seq: int, payload: bytes = b"") -> bytes:
    """Encode one frame: sync, type, sequence, length, payload, CRC-32."""
    if len(payload) > 0xFFFF:
        raise ValueError("payload longer than 65535 bytes")
    body = HEADER.pack(kind, seq & 0xFF, len(payload)) + payload
    return SYNC + body + CRC.pack(zlib.crc32(body))


class FrameReader:
    """Find whole, intact frames in a byte stream.

    After a bad CRC or an impossible length the search restarts one byte
    after the false start, so a frame that follows damage is still found.
    """

    def __init__(self, max_payload: int = MAX_PAYLOAD) -> None:
        self.buffer = bytearray()
        self.damaged = 0
        self.max_payload = max_payload

    def feed(self, data: bytes) -> None:
        self.buffer += data

    def discard(self) -> None:
        """Drop a partial frame whose rest will not come."""
        if self.buffer:
            self.damaged += 1
            self.buffer.clear()

    def next_frame(self) -> tuple[int, int, bytes] | None:
        while True:
            start = self.buffer.find(SYNC)
            if start < 0:
                keep = 1 if self.buffer.endswith(SYNC[:1]) else 0
                del self.buffer[: len(self.buffer) - keep]
                return None
            del self.buffer[:start]
            if len(self.buffer) < len(SYNC) + HEADER.size:
                return None
            kind, seq, length = HEADER.unpack_from(self.buffer, len(SYNC))
            if length > self.max_payload:
                self.damaged += 1
                del self.buffer[:1]
                continue
            end = len(SYNC) + HEADER.size + length
            if len(self.buffer) < end + CRC.size:
                return None
            (crc,) = CRC.unpack_from(self.buffer, end)
            if crc != zlib.crc32(self.buffer[len(SYNC) : end]):
                self.damaged += 1
                del self.buffer[:1]
                continue
            payload = bytes(self.buffer[len(SYNC) + HEADER.size : end])
            del self.buffer[: end + CRC.size]
            return kind, seq, payload


class DeviceReset(ToolkitError):
    """The firmware sent its boot frame in the middle of an exchange."""


@dataclass(frozen=True)
class DeviceInfo:
    """Model and firmware description from the INFO reply."""

    protocol_version: int
    max_payload: int
    model_crc: int
    counter_hz: int
    layer_count: int
    arena_bytes: int
    stack_bytes: int
    model_ready: bool
    input_bytes: tuple[int, ...]
    output_bytes: tuple[int, ...]

    @classmethod
    def decode(cls, payload: bytes) -> DeviceInfo:
        fixed = struct.Struct("<HHIIIIIBBB")
        if len(payload) < fixed.size:
            raise ToolkitError(f"INFO reply of {len(payload)} bytes is too short")
        version, max_payload, crc, hz, layers, arena, stack, inputs, outputs, ready = (
            fixed.unpack_from(payload)
        )
        sizes = struct.unpack_from(f"<{inputs + outputs}I", payload, fixed.size)
        return cls(
            version,
            max_payload,
            crc,
            hz,
            layers,
            arena,
            stack,
            bool(ready),
            sizes[:inputs],
            sizes[inputs:],
        )


@dataclass
class RunResult:
    """The outputs of one invoke, the ticks it took in total and per layer,
    and the deepest the stack has been since reset."""

    outputs: list[bytes]
    ticks: int
    layer_ticks: list[int]
    stack_used: int


@dataclass
class LinkStats:
    """Counts of the line errors that the link recovered from."""

    retries: int = 0
    timeouts: int = 0
    naks: int = 0
    damaged_frames: int = 0
    resets: int = 0


class Device:
    """A firmware serial server on a pyserial port.

    Args:
      port: an open pyserial port (or an object with `read`, `write`,
        `timeout` and `in_waiting`).
      name: how errors name the device, e.g. "QEMU mps2-an386" or the port.
      timeout: seconds to wait for a reply before asking again.
      invoke_timeout: seconds an invoke may take once the device confirmed
        that it started.
      retries: attempts per request before giving up.
      resets: device resets that one `run` survives by starting over.
    """

    def __init__(
        self,
        port: Any,
        name: str,
        timeout: float = 2.0,
        invoke_timeout: float = 120.0,
        retries: int = 6,
        resets: int = 2,
    ):
        self.port = port
        self.name = name
        self.timeout = timeout
        self.invoke_timeout = invoke_timeout
        self.retries = retries
        self.resets = resets
        self.stats = LinkStats()
        self._reader = FrameReader()
        self._seq = 0
        self._info: DeviceInfo | None = None
        self._device_payload = MAX_PAYLOAD

    def close(self) -> None:
        self.port.close()

    def __enter__(self) -> Device:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def _receive(self, deadline: float) -> tuple[int, int, bytes] | str:
        """Return the next intact frame, "damaged" when a frame arrived
        broken, or "timeout" at the deadline."""
        damaged = self._reader.damaged
        last_byte = time.monotonic()
        while True:
            frame = self._reader.next_frame()
            if frame is not None:
                return frame
            if self._reader.damaged != damaged:
                self.stats.damaged_frames += self._reader.damaged - damaged
                return "damaged"
            now = time.monotonic()
            if now >= deadline:
                return "timeout"
            if self._reader.buffer and now - last_byte > min(0.5, self.timeout):
                # The rest of a started frame never came: bytes were lost.
                self._reader.discard()
                continue
            self.port.timeout = min(deadline - now, 0.05)
            data = self.port.read(max(1, self.port.in_waiting))
            if data:
                last_byte = time.monotonic()
                self._reader.feed(data)

    def request(self, command: int, payload: bytes = b"", allow_boot: bool = False) -> bytes:
        """Send one request and return the payload of its reply after the
        status byte, retrying damaged, refused and missing replies."""
        self._seq = (self._seq + 1) & 0xFF
        seq = self._seq
        frame = encode_frame(command, seq, payload)
        name = COMMAND_NAMES.get(command, f"command {command:#04x}")
        timeouts = naks = 0
        for attempt in range(self.retries):
            if attempt:
                self.stats.retries += 1
            self.port.write(frame)
            deadline = time.monotonic() + self.timeout
            while True:
                got = self._receive(deadline)
                if got == "timeout":
                    timeouts += 1
                    self.stats.timeouts += 1
                    # A partial frame left now would swallow the next reply.
                    self._reader.discard()
                    self._flush_device()
                    break
                if got == "damaged":
                    break
                assert isinstance(got, tuple)
                kind, reply_seq, body = got
                if kind == MSG_BOOT:
                    if len(body) >= 8:
                        (self._device_payload,) = struct.unpack_from("<H", body, 6)
                        self._reader.max_payload = self._device_payload
                    if allow_boot:
                        continue
                    self.stats.resets += 1
                    raise DeviceReset(f"{self.name}: the device reset during {name}")
                if kind == MSG_FAULT:
                    (number,) = struct.unpack_from("<I", body.ljust(4, b"\0"))
                    raise ToolkitError(
                        f"{self.name}: the firmware stopped on a fault "
                        f"({EXCEPTIONS.get(number, f'exception {number}')}) during {name}; "
                        "rebuild it with toolkit build and check the stack size in "
                        "firmware/target.toml"
                    )
                if kind == MSG_NAK:
                    naks += 1
                    self.stats.naks += 1
                    break
                if reply_seq != seq:
                    continue  # a late reply to an earlier request
                if kind == MSG_BUSY and command == CMD_INVOKE:
                    deadline = time.monotonic() + self.invoke_timeout
                    continue
                if kind != command | REPLY_BIT or not body:
                    continue
                if body[0] != 0:
                    reason = STATUS_TEXT.get(body[0], f"status {body[0]}")
                    raise ToolkitError(f"{self.name}: {name} failed: {reason}")
                return body[1:]
        raise ToolkitError(
            f"{self.name}: no valid reply to {name} after {self.retries} attempts "
            f"({timeouts} timed out after {self.timeout:g} s, {naks} refused by the device as "
            f"damaged, {self.stats.damaged_frames} damaged frames received in this session); "
            "check that the firmware runs, that the port is the board's and that nothing else "
            "has it open"
        )

    def _flush_device(self) -> None:
        """Complete any frame the device is still collecting.

        A lost byte, or a damaged length, leaves the device waiting for the
        rest of a frame, and short requests sent again would only feed it.
        Zeros longer than the largest frame finish that frame (its CRC fails)
        and contain no sync bytes, so the device is looking for a new frame
        when the request is sent again.
        """
        self.port.write(bytes(self._device_payload + 16))

    def info(self) -> DeviceInfo:
        """Ask the firmware what it runs (cached)."""
        if self._info is None:
            info = DeviceInfo.decode(self.request(CMD_INFO, allow_boot=True))
            if info.protocol_version != PROTOCOL_VERSION:
                raise ToolkitError(
                    f"{self.name}: the firmware speaks protocol version {info.protocol_version}, "
                    f"this toolkit version {PROTOCOL_VERSION}; rebuild it with toolkit build"
                )
            if not info.model_ready:
                raise ToolkitError(
                    f"{self.name}: the model's parameter check failed on the device; deploy and "
                    "build again"
                )
            self._info = info
            self._device_payload = info.max_payload
            self._reader.max_payload = info.max_payload
        return self._info

    def check_model(self, crc: int, directory: str | os.PathLike[str]) -> None:
        """Refuse a device whose firmware was built for another model."""
        found = self.info().model_crc
        if found != crc:
            raise ToolkitError(
                f"{self.name}: the firmware runs another model (model CRC {found:#010x}, "
                f"{directory}/model.tflite has {crc:#010x}); flash {directory}/firmware.elf "
                "with toolkit flash"
            )

    def _chunk(self) -> int:
        return self.info().max_payload - 8

    def write_input(self, index: int, data: bytes) -> None:
        size = self.info().input_bytes[index]
        if len(data) != size:
            raise ToolkitError(f"{self.name}: input {index} needs {size} bytes, got {len(data)}")
        step = self._chunk()
        for offset in range(0, size, step):
            header = struct.pack("<BI", index, offset)
            self.request(CMD_WRITE_INPUT, header + data[offset : offset + step])

    def invoke(self) -> tuple[int, int]:
        """Run the model once; return the ticks it took and the stack's
        high-water mark in bytes."""
        reply = self.request(CMD_INVOKE)
        low, high, stack = struct.unpack_from("<III", reply)
        return low | high << 32, stack

    def _read_bytes(self, command: int, header: bytes, size: int) -> bytes:
        step = self._chunk()
        parts = []
        for offset in range(0, size, step):
            count = min(step, size - offset)
            part = self.request(command, header + struct.pack("<IH", offset, count))
            if len(part) != count:
                raise ToolkitError(
                    f"{self.name}: {COMMAND_NAMES[command]} returned {len(part)} bytes, "
                    f"expected {count}"
                )
            parts.append(part)
        return b"".join(parts)

    def read_output(self, index: int) -> bytes:
        size = self.info().output_bytes[index]
        return self._read_bytes(CMD_READ_OUTPUT, struct.pack("<B", index), size)

    def invoke_layer(self, layer: int) -> None:
        """Run one layer; layers run in order after the inputs are written."""
        self.request(CMD_INVOKE_LAYER, struct.pack("<I", layer))

    def read_layer_output(self, layer: int, size: int) -> bytes:
        """Read the `size` bytes of one layer's output, valid right after it ran."""
        return self._read_bytes(CMD_READ_LAYER, struct.pack("<I", layer), size)

    def read_counts(self) -> list[int]:
        layers = self.info().layer_count
        step = self._chunk() // 4
        counts: list[int] = []
        for first in range(0, layers, step):
            count = min(step, layers - first)
            reply = self.request(CMD_READ_COUNTS, struct.pack("<IH", first, count))
            counts += struct.unpack_from(f"<{count}I", reply)
        return counts

    def run(self, inputs: Sequence[bytes]) -> RunResult:
        """Write the inputs, invoke, and read the outputs and layer counts.
        A device reset in between starts the run over, `resets` times."""
        for _ in range(self.resets + 1):
            try:
                info = self.info()
                if len(inputs) != len(info.input_bytes):
                    raise ToolkitError(
                        f"{self.name}: the model has {len(info.input_bytes)} inputs, "
                        f"got {len(inputs)}"
                    )
                for index, data in enumerate(inputs):
                    self.write_input(index, data)
                ticks, stack = self.invoke()
                outputs = [self.read_output(i) for i in range(len(info.output_bytes))]
                return RunResult(outputs, ticks, self.read_counts(), stack)
            except DeviceReset:
                continue
        raise ToolkitError(
            f"{self.name}: the device reset {self.stats.resets} times during one run; check its "
            "power supply and watchdog, and the stack size in firmware/target.toml"
        )


def open_port(port: str, baudrate: int = 115200) -> Any:
    """Open a serial device path or a pyserial URL (socket://, loop://)."""
    import serial

    try:
        return serial.serial_for_url(port, baudrate=baudrate, timeout=0.05)
    except (serial.SerialException, OSError, ValueError) as exc:
        raise ToolkitError(
            f"cannot open serial port {port}: {exc}; check that the board is connected "
            "(ls /dev/ttyACM* /dev/ttyUSB*) and that you may use it (the dialout group)"
        ) from exc


def qemu_binary() -> str:
    """Find qemu-system-arm ($QEMU_SYSTEM_ARM overrides it)."""
    from toolkit.build import find_program

    return find_program(
        "QEMU_SYSTEM_ARM",
        "qemu-system-arm",
        "QEMU",
        "`apt-get install qemu-system-arm` (Debian, Ubuntu)",
    )


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class QemuBoard:
    """qemu-system-arm running one ELF, its UART on a TCP port on 127.0.0.1.

    QEMU waits for the first connection before it starts the guest, so the
    boot frame is never missed. `url` is the pyserial URL to connect to.
    """

    def __init__(
        self,
        elf: str | os.PathLike[str],
        machine: str,
        icount: bool = True,
        monitor: bool = False,
    ):
        self.elf = Path(elf)
        self.machine = machine
        self.icount = icount
        self.monitor = monitor
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.monitor_port = 0
        # QEMU writes to the log for as long as it runs; __exit__ closes it.
        self._log = tempfile.TemporaryFile()  # noqa: SIM115

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self.port}"

    def command(self, port: int) -> list[str]:
        command = [
            qemu_binary(),
            "-machine",
            self.machine,
            "-display",
            "none",
            "-monitor",
            f"tcp:127.0.0.1:{self.monitor_port},server=on,wait=off" if self.monitor else "none",
            "-nodefaults",
            "-kernel",
            str(self.elf),
            "-chardev",
            f"socket,id=uart0,host=127.0.0.1,port={port},server=on,wait=on",
            "-serial",
            "chardev:uart0",
        ]
        if self.icount:
            command += ["-icount", "shift=0"]
        return command

    def start(self) -> str:
        """Start QEMU; return the URL its UART listens on."""
        if not self.elf.is_file():
            raise ToolkitError(f"{self.elf}: no such firmware; run toolkit build first")
        for _ in range(3):
            self.port = _free_port()
            self.monitor_port = _free_port() if self.monitor else 0
            self.process = subprocess.Popen(
                self.command(self.port),
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=self._log,
            )
            if self._wait_listening():
                return self.url
        raise ToolkitError(f"QEMU ({self.machine}) did not start: {self.log()}")

    def _wait_listening(self, limit: float = 20.0) -> bool:
        """True once QEMU listens; False when it exited (a port taken in
        between, say). The probe only looks: QEMU announces on stderr."""
        assert self.process is not None
        deadline = time.monotonic() + limit
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            if b"waiting for connection" in self._read_log():
                return True
            time.sleep(0.02)
        self.close()
        raise ToolkitError(f"QEMU ({self.machine}) did not open its serial port in {limit:g} s")

    def reset(self) -> None:
        """Reset the emulated board, as its reset button would (needs
        `monitor=True`)."""
        if not self.monitor:
            raise ToolkitError("QemuBoard.reset needs monitor=True")
        with socket.create_connection(("127.0.0.1", self.monitor_port), timeout=5) as monitor:
            monitor.sendall(b"system_reset\n")
            time.sleep(0.1)

    def _read_log(self) -> bytes:
        self._log.seek(0)
        return self._log.read()

    def log(self) -> str:
        return self._read_log().decode(errors="replace").strip()

    def close(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def __enter__(self) -> QemuBoard:
        self.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()
        self._log.close()

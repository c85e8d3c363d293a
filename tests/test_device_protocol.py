"""The host side of the serial protocol (toolkit.device) against a Python
stand-in for the firmware: framing, retries, resets and faults, with no
emulator needed."""

from __future__ import annotations

import time

import pytest

from tests.fake_firmware import LAYERS, SIZE, FakeFirmware, fault_frame
from toolkit.device import (
    CMD_INVOKE,
    CMD_READ_OUTPUT,
    MSG_BOOT,
    REPLY_BIT,
    Device,
    DeviceInfo,
    FrameReader,
    encode_frame,
)
from toolkit.errors import ToolkitError

DATA = bytes(range(SIZE))


def _device(firmware: FakeFirmware, **options: float) -> Device:
    return Device(firmware, "fake", **{"timeout": 0.05, **options})  # type: ignore[arg-type]


def _flip(frame: bytes) -> bytes:
    damaged = bytearray(frame)
    damaged[len(frame) // 2] ^= 0x10
    return bytes(damaged)


def test_reader_finds_frames_after_noise_and_damage() -> None:
    first = encode_frame(0x81, 1, b"hello")
    second = encode_frame(0x82, 2, bytes(300))
    stream = b"\x00\xa5\xa5\x5a\x01" + first + _flip(first) + b"\xa5" + second
    reader = FrameReader()
    frames = []
    for byte in stream:  # one byte at a time, as a slow UART delivers them
        reader.feed(bytes([byte]))
        while (frame := reader.next_frame()) is not None:
            frames.append(frame)
    assert frames == [(0x81, 1, b"hello"), (0x82, 2, bytes(300))]
    assert reader.damaged >= 1


def test_reader_rejects_impossible_length() -> None:
    reader = FrameReader()
    reader.feed(b"\xa5\x5a\x81\x01\xff\xff" + encode_frame(0x81, 3, b"ok"))
    assert reader.next_frame() == (0x81, 3, b"ok")
    assert reader.damaged == 1


def test_info_decodes() -> None:
    device = _device(FakeFirmware())
    info = device.info()
    assert isinstance(info, DeviceInfo)
    assert (info.layer_count, info.input_bytes, info.output_bytes) == (LAYERS, (SIZE,), (SIZE,))
    assert info.counter_hz == 25_000_000


def test_run_in_chunks() -> None:
    firmware = FakeFirmware()
    result = _device(firmware).run([DATA])
    assert result.outputs == [DATA]
    assert result.ticks == 1000
    assert result.layer_ticks == [10, 20, 30]
    # 100 bytes with a 64-byte payload limit: two writes and two reads.
    assert firmware.requests.count(0x02) == 2
    assert firmware.requests.count(0x04) == 2


def test_damaged_replies_are_asked_for_again() -> None:
    damaged = []

    def damage_first_three(kind: int, frame: bytes) -> bytes:
        if kind & REPLY_BIT and kind != 0xFF and len(damaged) < 3:
            damaged.append(kind)
            return _flip(frame)
        return frame

    device = _device(FakeFirmware(damage_first_three))
    assert device.run([DATA]).outputs == [DATA]
    assert device.stats.damaged_frames == 3
    assert device.stats.retries == 3


def test_lost_replies_are_requested_again() -> None:
    dropped = []

    def drop_output_replies(kind: int, frame: bytes) -> bytes:
        if kind == CMD_READ_OUTPUT | REPLY_BIT and len(dropped) < 2:
            dropped.append(kind)
            return b""
        return frame

    device = _device(FakeFirmware(drop_output_replies))
    assert device.run([DATA]).outputs == [DATA]
    assert device.stats.timeouts == 2


def test_truncated_reply_is_not_waited_for() -> None:
    cut = []

    def truncate_once(kind: int, frame: bytes) -> bytes:
        if kind == CMD_INVOKE | REPLY_BIT and not cut:
            cut.append(kind)
            return frame[:-3]
        return frame

    device = _device(FakeFirmware(truncate_once), timeout=1.0)
    started = time.monotonic()
    assert device.run([DATA]).ticks == 1000
    # The broken frame is dropped after 0.5 s without bytes, not at the 1 s timeout.
    assert time.monotonic() - started < 0.9


def test_silent_device_fails_in_bounded_time() -> None:
    device = _device(FakeFirmware(lambda kind, frame: b""), retries=4)
    started = time.monotonic()
    expected = r"no valid reply to INFO after 4 attempts \(4 timed out"
    with pytest.raises(ToolkitError, match=expected):
        device.info()
    assert time.monotonic() - started < 1.0


def test_reset_restarts_the_run() -> None:
    firmware = FakeFirmware()
    resets = []

    def reset_on_first_invoke(kind: int, frame: bytes) -> bytes:
        if kind == CMD_INVOKE | REPLY_BIT and not resets:
            resets.append(kind)
            firmware.buffer[:] = bytes(SIZE)  # a reset clears RAM
            return encode_frame(MSG_BOOT, 0, b"\x01\x00\x07\x00\x00\x00")
        return frame

    firmware.behaviour = reset_on_first_invoke
    device = _device(firmware)
    assert device.run([DATA]).outputs == [DATA]
    assert device.stats.resets == 1
    assert firmware.invokes == 2


def test_endless_resets_give_up() -> None:
    def always_reset(kind: int, frame: bytes) -> bytes:
        if kind == CMD_INVOKE | REPLY_BIT:
            return encode_frame(MSG_BOOT, 0, b"\x01\x00\x07\x00\x00\x00")
        return frame

    device = _device(FakeFirmware(always_reset), resets=2)
    with pytest.raises(ToolkitError, match="reset 3 times during one run"):
        device.run([DATA])


def test_fault_is_reported() -> None:
    def fault_on_invoke(kind: int, frame: bytes) -> bytes:
        return fault_frame() if kind == CMD_INVOKE | REPLY_BIT else frame

    with pytest.raises(ToolkitError, match="fault \\(HardFault\\) during INVOKE"):
        _device(FakeFirmware(fault_on_invoke)).run([DATA])


def test_firmware_of_another_model_is_refused() -> None:
    device = _device(FakeFirmware(crc=7))
    device.check_model(7, "DIR")
    with pytest.raises(ToolkitError, match="runs another model .* flash DIR/firmware.elf"):
        device.check_model(8, "DIR")


def test_refused_request_names_the_reason() -> None:
    with pytest.raises(ToolkitError, match="command 0x42 failed: the firmware does not know"):
        _device(FakeFirmware()).request(0x42)


def test_wrong_input_size_is_refused() -> None:
    with pytest.raises(ToolkitError, match="input 0 needs 100 bytes, got 3"):
        _device(FakeFirmware()).write_input(0, b"abc")

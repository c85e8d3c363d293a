"""Run a deployed Cortex-M model in QEMU or on a board over serial.

`connect` opens the device of a deployed directory: QEMU on its
firmware.elf (`emulate=True`) or a board on a serial port, and checks that
the firmware was built for the directory's model. `run_samples` runs numpy
inputs and returns numpy outputs with per-layer counts; `format_counts`
prints those counts with the MACs of each layer.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from toolkit.device import Device, QemuBoard, RunResult, open_port
from toolkit.errors import ToolkitError
from toolkit.firmware import ELF_NAME, model_crc
from toolkit.report import format_table
from toolkit.targets import Target, load_target_file


def load_firmware_target(directory: Path) -> Target:
    path = directory / "firmware" / "target.toml"
    if not path.is_file():
        raise ToolkitError(
            f"{directory}: no firmware in this directory (it was deployed for the host); deploy "
            "with --target, e.g. `toolkit deploy MODEL --target cortex-m4 --out DIR`"
        )
    return load_target_file(path)


@contextmanager
def connect(
    directory: str | os.PathLike[str],
    emulate: bool = False,
    port: str | None = None,
    baudrate: int = 115200,
    **device_options: Any,
) -> Iterator[Device]:
    """Open the device that runs `directory`'s firmware; see `Device` for
    the timeout and retry options."""
    directory = Path(directory)
    target = load_firmware_target(directory)
    if emulate == (port is not None):
        raise ToolkitError("give either --emulate (QEMU) or --port PORT (a board), not both")
    board = None
    if emulate:
        if target.qemu_machine is None:
            raise ToolkitError(
                f"target {target.name} ({target.description}) has no emulator; run it on the "
                "board with --port, e.g. --port /dev/ttyACM0"
            )
        elf = directory / ELF_NAME
        if not elf.is_file():
            raise ToolkitError(f"{elf}: not built; run toolkit build {directory}")
        board = QemuBoard(elf, target.qemu_machine)
        url = board.start()
        name = f"QEMU {target.qemu_machine}"
    else:
        assert port is not None
        url = port
        name = port
    try:
        device = Device(open_port(url, baudrate), name, **device_options)
        try:
            device.check_model(model_crc(directory), directory)
            yield device
        finally:
            device.close()
    except ToolkitError as exc:
        if board is not None and board.process is not None and board.process.poll() is not None:
            raise ToolkitError(f"{exc}\nQEMU exited: {board.log()}") from exc
        raise
    finally:
        if board is not None:
            board.close()


@dataclass
class SampleResult:
    outputs: list[np.ndarray]
    ticks: int
    layer_ticks: list[int]
    stack_used: int


def input_bytes(report: dict[str, Any], sample: Sequence[np.ndarray]) -> list[bytes]:
    """Convert one sample (an array per model input) to the bytes the device takes."""
    return [
        np.ascontiguousarray(value, dtype=spec["dtype"]).tobytes()
        for spec, value in zip(report["inputs"], sample, strict=True)
    ]


def run_samples(
    device: Device, report: dict[str, Any], samples: Sequence[Sequence[np.ndarray]]
) -> list[SampleResult]:
    """Run each sample (one array per model input) on the device."""
    results = []
    for sample in samples:
        raw: RunResult = device.run(input_bytes(report, sample))
        outputs = [
            np.frombuffer(blob, dtype=spec["dtype"]).reshape(spec["shape"]).copy()
            for blob, spec in zip(raw.outputs, report["outputs"], strict=True)
        ]
        results.append(SampleResult(outputs, raw.ticks, raw.layer_ticks, raw.stack_used))
    return results


def counts_unit(emulated: bool, counter_hz: int) -> tuple[str, float]:
    """Name and scale of a tick: under QEMU -icount shift=0 one instruction
    takes one virtual nanosecond; on a board SysTick counts core cycles."""
    if emulated:
        return "instructions", 1e9 / counter_hz
    return "cycles", 1.0


def layer_counts(
    report: dict[str, Any], ticks: Sequence[int], scale: float
) -> list[dict[str, Any]]:
    """Per-layer counts joined with the report's ops and MACs."""
    rows = []
    for layer, count in zip(report["layers"], ticks, strict=True):
        value = int(round(count * scale))
        macs = layer["macs"]
        rows.append(
            {
                "index": layer["index"],
                "op": layer["op"],
                "format": layer["format"],
                "macs": macs,
                "count": value,
                "per_mac": value / macs if macs else None,
            }
        )
    return rows


def format_counts(rows: Sequence[dict[str, Any]], unit: str) -> str:
    headers = ["#", "op", "format", "MACs", unit, f"{unit}/MAC"]
    table = [
        [
            str(row["index"]),
            row["op"],
            row["format"],
            f"{row['macs']:,}",
            f"{row['count']:,}",
            "" if row["per_mac"] is None else f"{row['per_mac']:.2f}",
        ]
        for row in rows
    ]
    total = sum(row["count"] for row in rows)
    macs = sum(row["macs"] for row in rows)
    table.append(
        ["", "total", "", f"{macs:,}", f"{total:,}", f"{total / macs:.2f}" if macs else ""]
    )
    return format_table(headers, table, {0, 3, 4, 5})

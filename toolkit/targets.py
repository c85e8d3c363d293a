"""Target descriptions: one TOML file per Cortex-M target in `targets/`.

A description names the compiler flags, the flash and RAM regions, the
stack size, the SysTick clock, and the firmware example's UART driver with
its settings. An emulated board also names its QEMU machine, and a real
board its pyOCD and OpenOCD settings.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolkit.errors import ToolkitError

HOST = "host"
UART_DRIVERS = ("cmsdk", "nrf51", "stm32")


def targets_dir() -> Path:
    """Return `targets/` beside the package (a source checkout)."""
    return Path(__file__).resolve().parent.parent / "targets"


def firmware_dir() -> Path:
    """Return the Cortex-M firmware example's sources."""
    return Path(__file__).resolve().parent.parent / "firmware_examples" / "cortex_m"


@dataclass(frozen=True)
class Region:
    origin: int
    size: int


@dataclass(frozen=True)
class Target:
    """A Cortex-M part or emulated board the firmware builds for."""

    name: str
    description: str
    cflags: tuple[str, ...]
    counter_hz: int
    stack_bytes: int
    flash: Region
    ram: Region
    uart_driver: str
    uart_defines: dict[str, str]
    max_payload: int = 256
    qemu_machine: str | None = None
    pyocd_target: str | None = None
    openocd_config: tuple[str, ...] = field(default_factory=tuple)

    @property
    def emulated(self) -> bool:
        return self.qemu_machine is not None


def target_names() -> list[str]:
    """List the Cortex-M targets that have a description, sorted."""
    directory = targets_dir()
    return sorted(path.stem for path in directory.glob("*.toml")) if directory.is_dir() else []


def _require(path: Path, table: dict[str, Any], key: str, kind: type) -> Any:
    if key not in table:
        raise ToolkitError(f"{path}: missing key '{key}'")
    value = table[key]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is int:
        raise ToolkitError(f"{path}: '{key}' must be a {kind.__name__}, got {value!r}")
    return value


def _region(path: Path, memory: dict[str, Any], key: str) -> Region:
    region = _require(path, memory, key, dict)
    origin = _require(path, region, "origin", int)
    size = _require(path, region, "size", int)
    if size <= 0 or origin < 0 or origin + size > 1 << 32:
        raise ToolkitError(
            f"{path}: memory.{key} {origin:#x}+{size:#x} is outside the 32-bit address space"
        )
    return Region(origin, size)


def load_target(name: str) -> Target:
    """Read `targets/NAME.toml`; a clear error lists the known names."""
    path = targets_dir() / f"{name}.toml"
    if not path.is_file():
        known = ", ".join([HOST, *target_names()])
        raise ToolkitError(f"unknown target '{name}'; supported targets: {known}")
    return load_target_file(path, name)


def load_target_file(path: Path, name: str | None = None) -> Target:
    """Read one target description; `name` defaults to its `name` key."""
    if not path.is_file():
        raise ToolkitError(f"{path}: missing target description; run toolkit deploy again")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as exc:
        raise ToolkitError(f"{path}: not valid TOML: {exc}") from exc

    memory = _require(path, data, "memory", dict)
    uart = _require(path, data, "uart", dict)
    driver = _require(path, uart, "driver", str)
    if driver not in UART_DRIVERS:
        raise ToolkitError(
            f"{path}: unknown uart.driver '{driver}'; supported: {', '.join(UART_DRIVERS)}"
        )

    max_payload = data.get("max_payload", 256)
    if not isinstance(max_payload, int) or not 64 <= max_payload <= 4096:
        raise ToolkitError(f"{path}: max_payload must be an integer from 64 to 4096")
    stack_bytes = _require(path, data, "stack_bytes", int)
    if stack_bytes < 256 or stack_bytes % 8:
        raise ToolkitError(
            f"{path}: stack_bytes is {stack_bytes}; give a multiple of 8 of at least 256"
        )
    counter_hz = _require(path, data, "counter_hz", int)
    if counter_hz <= 0:
        raise ToolkitError(f"{path}: counter_hz is {counter_hz}; give the SysTick clock in Hz")
    cflags = _require(path, data, "cflags", list)
    if not all(isinstance(flag, str) for flag in cflags):
        raise ToolkitError(f"{path}: cflags must be a list of strings, got {cflags!r}")
    if name is None:
        name = _require(path, data, "name", str)

    qemu = data.get("qemu", {})
    board = data.get("board", {})
    return Target(
        name=name,
        description=_require(path, data, "description", str),
        cflags=tuple(cflags),
        counter_hz=counter_hz,
        stack_bytes=stack_bytes,
        flash=_region(path, memory, "flash"),
        ram=_region(path, memory, "ram"),
        uart_driver=driver,
        uart_defines={str(k): str(v) for k, v in uart.get("defines", {}).items()},
        max_payload=max_payload,
        qemu_machine=qemu.get("machine"),
        pyocd_target=board.get("pyocd_target"),
        openocd_config=tuple(board.get("openocd_config", ())),
    )

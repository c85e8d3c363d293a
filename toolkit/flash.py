"""Write a firmware ELF to a board with pyOCD or OpenOCD.

The target description names the part for pyOCD (`pyocd_target`) and the
OpenOCD configuration files (`openocd_config`). The first installed tool
is used (pyOCD before OpenOCD) unless the caller names one. A missing tool
or probe raises an error that names what to install or connect.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from toolkit.errors import ToolkitError
from toolkit.firmware import ELF_NAME
from toolkit.targets import Target, load_target, load_target_file

TOOLS = ("pyocd", "openocd")
_NO_PROBE = (
    "no available debug probe",
    "no connected debug probe",
    "no probe",
    "unable to find",
    "open failed",
    "libusb_open() failed",
    "error: no device found",
)


def flash_command(tool: str, elf: Path, target: Target, probe: str | None) -> list[str]:
    if tool == "pyocd":
        if not target.pyocd_target:
            raise ToolkitError(f"target {target.name} names no pyocd_target; use --tool openocd")
        command = ["pyocd", "flash", "--target", target.pyocd_target]
        if probe:
            command += ["--uid", probe]
        return [*command, str(elf)]
    if not target.openocd_config:
        raise ToolkitError(f"target {target.name} names no openocd_config; use --tool pyocd")
    command = ["openocd"]
    if probe:
        command += ["-c", f"adapter serial {probe}"]
    for config in target.openocd_config:
        command += ["-f", config]
    return [*command, "-c", f"program {elf} verify reset exit"]


def _resolve(path: Path, target_name: str | None) -> tuple[Path, Target]:
    if path.is_dir():
        elf = path / ELF_NAME
        if not elf.is_file():
            raise ToolkitError(f"{elf}: not built; run toolkit build {path}")
        description = path / "firmware" / "target.toml"
        target = load_target(target_name) if target_name else load_target_file(description)
        return elf, target
    if not path.is_file():
        raise ToolkitError(
            f"{path}: no such file or directory; give a deployed directory or an ELF"
        )
    if target_name is None:
        raise ToolkitError(f"{path}: an ELF alone does not name its part; add --target NAME")
    return path, load_target(target_name)


def flash(
    path: str | os.PathLike[str],
    target_name: str | None = None,
    tool: str | None = None,
    probe: str | None = None,
) -> str:
    """Flash DIR/firmware.elf (or an ELF with `target_name`); return the
    tool's output."""
    elf, target = _resolve(Path(path), target_name)

    if target.emulated and not (target.pyocd_target or target.openocd_config):
        raise ToolkitError(
            f"target {target.name} ({target.description}) runs in QEMU and has no flashing "
            f"settings; run it with `toolkit run {path} --emulate`"
        )
    if tool is not None and tool not in TOOLS:
        raise ToolkitError(f"unknown flashing tool '{tool}'; supported: {', '.join(TOOLS)}")

    candidates = [tool] if tool else list(TOOLS)
    found = [name for name in candidates if shutil.which(name)]
    if not found:
        expected = " or ".join(candidates)
        raise ToolkitError(
            f"no flashing tool found ({expected} is not on the PATH): install pyOCD with "
            "`pip install pyocd` or OpenOCD with `apt-get install openocd`; boards with an "
            f"ST-LINK or DAPLink USB drive also take {elf.with_suffix('.bin')} copied onto it"
        )

    command = flash_command(found[0], elf, target, probe)
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ToolkitError(f"{found[0]} did not finish in 300 s: {' '.join(command)}") from exc

    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        lowered = output.lower()
        if any(marker in lowered for marker in _NO_PROBE):
            raise ToolkitError(
                f"{found[0]} found no debug probe for {target.name}: connect the board's "
                "debugger USB port, check `lsusb`, and give --probe ID when several are "
                f"attached. {found[0]} said: {output[-400:]}"
            )
        raise ToolkitError(
            f"flashing {elf} with {found[0]} failed (exit {result.returncode}): "
            f"{' '.join(command)}\n{output[-2000:]}"
        )
    return output

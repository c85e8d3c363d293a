"""Cross-build a deployed model with the Cortex-M firmware example.

`stage_firmware` copies the serial server (firmware_examples/cortex_m), the
section layout and the target description into DIR/firmware/. Then
`build_firmware` writes the memory map, compiles everything in DIR with
arm-none-eabi-gcc into DIR/firmware.elf and measures flash and RAM from the
ELF. A part that is too small stops the build with the number of bytes
missing. DIR/firmware/Makefile repeats the same command for builds without
Python.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from toolkit.build import WARNING_FLAGS, elf_section_bytes, find_program, source_files
from toolkit.errors import ToolkitError
from toolkit.targets import Target, firmware_dir, load_target_file, targets_dir

FIRMWARE_SOURCES = ("main.c", "startup.c", "counter.c")
FIRMWARE_HEADERS = ("firmware.h", "model_hooks.h", "protocol.h")
SECTIONS_SCRIPT = "cortex_m_sections.ld"
ELF_NAME = "firmware.elf"
COMMON_FLAGS = ("-O2", "-g", "-ffunction-sections", "-fdata-sections")
LINK_FLAGS = ("-nostartfiles", "--specs=nano.specs", "-Wl,--gc-sections")
_OVERFLOW = re.compile(r"region [`']?(\w+)'? overflowed by (\d+) bytes")


def cross_compiler() -> str:
    """Find arm-none-eabi-gcc ($ARM_CC overrides it)."""
    return find_program(
        "ARM_CC",
        "arm-none-eabi-gcc",
        "the Arm cross compiler",
        "`apt-get install gcc-arm-none-eabi libnewlib-arm-none-eabi` (Debian, Ubuntu)",
    )


@dataclass(frozen=True)
class FirmwareSize:
    """Bytes of flash and RAM a firmware ELF takes, against the part's."""

    elf: str
    flash_bytes: int
    flash_size: int
    ram_bytes: int
    ram_size: int
    code_and_constants: int
    static_ram: int
    stack_bytes: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def model_crc(project: Path) -> int:
    """CRC-32 of DIR/model.tflite, built into the firmware to identify it."""
    path = project / "model.tflite"
    if not path.is_file():
        raise ToolkitError(f"{path}: missing; run toolkit deploy again")
    return zlib.crc32(path.read_bytes())


def memory_script(target: Target) -> str:
    return (
        f"/* memory.ld: written by toolkit from the {target.name} description. */\n"
        "MEMORY\n{\n"
        f"  FLASH (rx) : ORIGIN = {target.flash.origin:#010x}, LENGTH = {target.flash.size:#x}\n"
        f"  RAM (rwx) : ORIGIN = {target.ram.origin:#010x}, LENGTH = {target.ram.size:#x}\n"
        "}\n"
        f"__stack_size = {target.stack_bytes};\n"
    )


def stage_firmware(project: Path, target: Target) -> None:
    """Copy the firmware sources, linker scripts and target description into
    `project`/firmware so that the directory builds on its own."""
    source = firmware_dir()
    if not (source / "main.c").is_file():
        raise ToolkitError(f"the firmware example was not found at {source}; use a source checkout")
    destination = project / "firmware"
    destination.mkdir(exist_ok=True)
    for name in (*FIRMWARE_SOURCES, *FIRMWARE_HEADERS, f"uart_{target.uart_driver}.c"):
        shutil.copyfile(source / name, destination / name)
    shutil.copyfile(targets_dir() / SECTIONS_SCRIPT, destination / SECTIONS_SCRIPT)
    description = (targets_dir() / f"{target.name}.toml").read_text()
    (destination / "target.toml").write_text(f'name = "{target.name}"\n{description}')
    (destination / "memory.ld").write_text(memory_script(target))


def _defines(project: Path, target: Target) -> list[str]:
    defines = {
        "FW_MODEL_CRC": f"{model_crc(project):#010x}u",
        "FW_COUNTER_HZ": f"{target.counter_hz}u",
        "FW_MAX_PAYLOAD": f"{target.max_payload}u",
        **target.uart_defines,
    }
    return [f"-D{key}={value}" for key, value in defines.items()]


def firmware_command(project: Path, target: Target, output: Path) -> list[str]:
    """Return the firmware's single compile-and-link command line."""
    firmware = project / "firmware"
    sources = [
        *source_files(project),
        *(firmware / name for name in FIRMWARE_SOURCES),
        firmware / f"uart_{target.uart_driver}.c",
    ]
    missing = [str(path) for path in sources if not path.is_file()]
    if missing:
        raise ToolkitError(
            f"{project}: missing firmware sources {missing}; run toolkit deploy again"
        )
    return [
        cross_compiler(),
        *target.cflags,
        *WARNING_FLAGS,
        *COMMON_FLAGS,
        f"-I{project}",
        f"-I{project / 'kernels' / 'include'}",
        f"-I{firmware}",
        *_defines(project, target),
        "-include",
        str(firmware / "model_hooks.h"),
        "-o",
        str(output),
        *map(str, sources),
        *LINK_FLAGS,
        # Relative, run in `project`: ld reads '%' in a map path as a pattern.
        f"-Wl,-Map={output.with_suffix('.map').name}",
        f"-L{firmware}",
        "-T",
        "memory.ld",
        "-T",
        SECTIONS_SCRIPT,
        "-lm",
    ]


def _overflow_error(label: str, target: Target, stderr: str) -> ToolkitError | None:
    overflows = {region: int(count) for region, count in _OVERFLOW.findall(stderr)}
    if not overflows:
        return None
    parts = []
    fixes = []
    for region, missing in overflows.items():
        size = target.flash.size if region == "FLASH" else target.ram.size
        name = "flash" if region == "FLASH" else "RAM"
        parts.append(
            f"{name} needs {size + missing:,} bytes but {target.name} has {size:,} "
            f"(over by {missing:,} bytes)"
        )
        if region == "FLASH":
            fixes.append(
                "flash holds the weights: pack them smaller with toolkit deploy --cluster 16 "
                "or --prune 0.5"
            )
        else:
            fixes.append(
                "RAM holds the activation arena, the serial buffers and the stack "
                f"({target.stack_bytes:,} bytes, stack_bytes in the target description): "
                "a model with smaller activations, a smaller stack or a part with more RAM fits"
            )
    return ToolkitError(
        f"{label}: the model does not fit {target.name} ({target.description}): "
        + "; ".join(parts)
        + ". "
        + ". ".join(fix[0].upper() + fix[1:] for fix in fixes)
    )


def measure(elf: Path, target: Target) -> FirmwareSize:
    """Flash and RAM of a firmware ELF from its section sizes."""
    text = elf_section_bytes(elf, ".text") + elf_section_bytes(elf, ".ARM.exidx")
    data = elf_section_bytes(elf, ".data")
    bss = elf_section_bytes(elf, ".bss")
    stack = elf_section_bytes(elf, ".stack")
    return FirmwareSize(
        elf=elf.name,
        flash_bytes=text + data,
        flash_size=target.flash.size,
        ram_bytes=data + bss + stack,
        ram_size=target.ram.size,
        code_and_constants=text,
        static_ram=data + bss,
        stack_bytes=stack,
    )


def makefile(project: Path, target: Target) -> str:
    """DIR/firmware/Makefile: the build command with paths relative to DIR."""
    command = firmware_command(project, target, project / ELF_NAME)
    root = str(project)
    words = [word.replace(root + "/", "").replace(root, ".") for word in command[1:]]
    flags = " \\\n\t".join(words)
    return (
        f"# Generated by toolkit: builds firmware.elf for {target.name} from the\n"
        "# directory above (run `make -C firmware` there). `toolkit build DIR`\n"
        "# runs the same command and checks the sizes.\n"
        "CC = arm-none-eabi-gcc\n\n"
        f"../{ELF_NAME}: FORCE\n"
        f"\tcd .. && $(CC) \\\n\t{flags}\n\n"
        "FORCE:\n.PHONY: FORCE\n"
    )


def build_firmware(
    project: str | os.PathLike[str], target: Target | None = None, label: str | None = None
) -> FirmwareSize:
    """Compile and link DIR/firmware.elf and return its sizes.

    Without `target`, the description copied into DIR/firmware/target.toml
    at deploy time is used, so `toolkit build DIR` needs nothing else.
    Errors name `label` (default: the directory).
    """
    project = Path(project)
    label = label or str(project)
    if target is None:
        target = load_target_file(project / "firmware" / "target.toml")
    output = project / ELF_NAME
    partial = project / f".{ELF_NAME}.partial"
    # The memory map follows the description, edited or not.
    (project / "firmware" / "memory.ld").write_text(memory_script(target))
    command = firmware_command(project, target, partial)
    result = subprocess.run(command, capture_output=True, text=True, check=False, cwd=project)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        overflow = _overflow_error(label, target, result.stderr)
        if overflow is not None:
            raise overflow
        raise ToolkitError(
            f"{label}: the firmware build for {target.name} failed:\n"
            f"{' '.join(command)}\n{result.stderr.strip()}"
        )
    binary = output.with_suffix(".bin")
    objcopy = command[0][: -len("gcc")] + "objcopy" if command[0].endswith("gcc") else None
    if objcopy and shutil.which(objcopy):
        # A raw image for boards that mount a USB drive to flash (ST-LINK, DAPLink).
        subprocess.run([objcopy, "-O", "binary", str(partial), str(binary)], check=True)
    partial.replace(output)
    partial.with_suffix(".map").replace(output.with_suffix(".map"))
    (project / "firmware" / "Makefile").write_text(makefile(project, target))
    return measure(output, target)


def rebuild(directory: str | os.PathLike[str]) -> FirmwareSize:
    """`toolkit build DIR`: build the firmware again after edits to DIR and
    record its sizes in DIR/report.json."""
    project = Path(directory)
    report_path = project / "report.json"
    if not (project / "firmware" / "target.toml").is_file() or not report_path.is_file():
        raise ToolkitError(
            f"{project}: not a directory deployed for a Cortex-M target; deploy with "
            "`toolkit deploy MODEL --target cortex-m4 --out DIR`"
        )
    size = build_firmware(project)
    report = json.loads(report_path.read_text())
    report["firmware"] = size.as_dict()
    partial = report_path.with_name(".report.json.partial")
    partial.write_text(json.dumps(report, indent=2) + "\n")
    partial.replace(report_path)
    return size


def format_size(size: dict[str, Any]) -> str:
    """Format the firmware's flash and RAM against the part's as one line."""
    return (
        f"firmware: {size['flash_bytes']:,} of {size['flash_size']:,} bytes of flash "
        f"({size['flash_bytes'] / size['flash_size']:.1%}), {size['ram_bytes']:,} of "
        f"{size['ram_size']:,} bytes of RAM ({size['ram_bytes'] / size['ram_size']:.1%}; "
        f"{size['static_ram']:,} static, {size['stack_bytes']:,} stack)"
    )

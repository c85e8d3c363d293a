"""Cortex-M: target descriptions, cross-builds, the firmware in QEMU through
the serial protocol, a damaging proxy on the line, and flashing.

QEMU runs are marked slow; CI runs them too, and there a missing
arm-none-eabi-gcc or qemu-system-arm fails the tests instead of skipping
them (tests/helpers.require_tool).
"""

from __future__ import annotations

import os
import re
import socket
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.helpers import PROJECT_ROOT, require_tool, shared_model
from toolkit.deploy import deploy
from toolkit.device import Device, QemuBoard, open_port
from toolkit.errors import ToolkitError
from toolkit.firmware import model_crc
from toolkit.reference import make_interpreter, run_tflm
from toolkit.remote import connect, run_samples
from toolkit.targets import load_target, target_names
from toolkit.validate import load_deployment, prepare_inputs, random_inputs, validate

EMULATED = ["cortex-m0", "cortex-m3", "cortex-m4", "cortex-m7", "cortex-m33", "cortex-m55"]
BOARDS = ["stm32f746", "stm32l476"]
MUST_SHOW = ["cortex-m4", "cortex-m7", "cortex-m55"]
MODELS = ["resnet8_cifar10_int8", "dscnn_kws_int8", "digits"]


def _cross_tools() -> None:
    require_tool("arm-none-eabi-gcc")


def _emulator() -> None:
    _cross_tools()
    require_tool("qemu-system-arm")


@pytest.fixture(scope="session")
def digits_tflite(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    """The digits example's CNN, trained briefly with a fixed seed and
    converted once; returns its .tflite path and 20 real test images."""
    from toolkit.examples.digits import load_digits_data, train_model

    data = load_digits_data(seed=0)
    model = train_model(data, epochs=3, seed=0)
    out = tmp_path_factory.mktemp("digits") / "host"
    deploy(model, out, calibration=data.x_train[:200], build=False)
    return out / "model.tflite", data.x_test[:20]


def _model_path(name: str, digits_tflite: tuple[Path, np.ndarray]) -> Path:
    return digits_tflite[0] if name == "digits" else shared_model(f"{name}.tflite")


@pytest.fixture(scope="session")
def firmware(
    tmp_path_factory: pytest.TempPathFactory, digits_tflite: tuple[Path, np.ndarray]
) -> Iterator[Any]:
    """Deploy and cross-build a model for a target once per session."""
    _cross_tools()
    root = tmp_path_factory.mktemp("firmware")
    built: dict[tuple[str, str], Path] = {}

    def get(model: str, target: str) -> Path:
        if (model, target) not in built:
            out = root / f"{model}-{target}"
            deploy(_model_path(model, digits_tflite), out, target=target)
            built[model, target] = out
        return built[model, target]

    yield get


# Descriptions ---------------------------------------------------------------


def test_every_target_has_a_description() -> None:
    assert set(EMULATED + BOARDS) <= set(target_names())
    for name in EMULATED:
        target = load_target(name)
        assert target.qemu_machine is not None, name
        assert f"-mcpu={name}" in target.cflags
    for name in BOARDS:
        target = load_target(name)
        assert target.qemu_machine is None
        assert target.pyocd_target and target.openocd_config
        assert target.flash.size >= 512 * 1024
        assert target.ram.size >= 64 * 1024


def test_unknown_target_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(ToolkitError, match="unknown target 'cortex-m99'.*cortex-m4.*stm32f746"):
        deploy(shared_model("dscnn_kws_int8.tflite"), tmp_path / "out", target="cortex-m99")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (("stack_bytes = 2048", "stack_bytes = 1001"), "stack_bytes is 1001; give a multiple of 8"),
        (("counter_hz = 25_000_000", "counter_hz = 0"), "counter_hz is 0; give the SysTick clock"),
        (('driver = "cmsdk"', 'driver = "pl011"'), "unknown uart.driver 'pl011'"),
        (("[memory]", "[memories]"), "missing key 'memory'"),
    ],
)
def test_invalid_description_is_rejected(
    tmp_path: Path, edit: tuple[str, str], message: str
) -> None:
    from toolkit.targets import load_target_file, targets_dir

    path = tmp_path / "target.toml"
    text = (targets_dir() / "cortex-m4.toml").read_text()
    assert edit[0] in text
    path.write_text(text.replace(*edit))
    with pytest.raises(ToolkitError, match=message):
        load_target_file(path, "edited")


# Builds ---------------------------------------------------------------------


@pytest.mark.parametrize("target", [t for t in EMULATED + BOARDS if t != "cortex-m0"])
def test_dscnn_builds_for_every_target(firmware: Any, target: str) -> None:
    """-Wall -Wextra -Werror -pedantic, the part's memory map, and sizes
    in the report that the ELF confirms."""
    out = firmware("dscnn_kws_int8", target)
    report = load_deployment(out)[0]
    size = report["firmware"]
    description = load_target(target)
    assert (out / "firmware.elf").is_file()
    assert (out / "firmware.bin").is_file()
    assert size["flash_size"] == description.flash.size
    assert size["ram_size"] == description.ram.size
    # The weights and the arena are in the image, the stack is reserved.
    assert size["flash_bytes"] > report["weight_bytes"]
    assert size["ram_bytes"] >= report["arena_bytes"] + description.stack_bytes
    assert size["stack_bytes"] == description.stack_bytes


def test_too_small_part_is_refused_by_bytes(tmp_path: Path) -> None:
    """dscnn's 16,000-byte arena and a 2 KB stack do not fit the micro:bit's 16 KB."""
    _cross_tools()
    with pytest.raises(ToolkitError) as caught:
        deploy(shared_model("dscnn_kws_int8.tflite"), tmp_path / "out", target="cortex-m0")
    message = str(caught.value)
    assert "dscnn_kws_int8.tflite: the model does not fit cortex-m0" in message
    found = re.search(
        r"RAM needs ([\d,]+) bytes but cortex-m0 has 16,384 \(over by ([\d,]+) bytes\)", message
    )
    assert found, message
    needed, over = (int(group.replace(",", "")) for group in found.groups())
    assert needed == 16_384 + over
    assert needed > 16_000 + 2048
    assert "a smaller stack or a part with more RAM" in message
    assert not (tmp_path / "out").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]


def test_too_small_flash_suggests_packing(tmp_path: Path) -> None:
    """The autoencoder's 270 KB of int8 weights do not fit the micro:bit's
    256 KB of flash."""
    _cross_tools()
    model = shared_model("autoencoder_toyadmos_int8.tflite")
    with pytest.raises(
        ToolkitError, match=r"flash needs [\d,]+ bytes but cortex-m0 has 262,144"
    ) as caught:
        deploy(model, tmp_path / "out", target="cortex-m0")
    assert "--cluster 16" in str(caught.value)
    assert not (tmp_path / "out").exists()


def test_toolkit_build_and_make_rebuild_after_edits(firmware: Any, tmp_path: Path) -> None:
    import shutil

    from toolkit.cli import main

    out = tmp_path / "copy"
    shutil.copytree(firmware("digits", "cortex-m4"), out)
    elf = out / "firmware.elf"
    before = elf.read_bytes()
    (out / "firmware" / "target.toml").write_text(
        (out / "firmware" / "target.toml")
        .read_text()
        .replace("stack_bytes = 2048", "stack_bytes = 4096")
    )
    assert main(["build", str(out)]) == 0
    report = load_deployment(out)[0]
    assert report["firmware"]["stack_bytes"] == 4096
    assert "__stack_size = 4096;" in (out / "firmware" / "memory.ld").read_text()
    assert elf.read_bytes() != before
    elf.unlink()
    require_tool("make")
    result = subprocess.run(
        ["make", "-s", "-C", str(out / "firmware")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert elf.is_file()


def test_cppcheck_firmware(firmware: Any) -> None:
    require_tool("cppcheck")
    firmware_dir = PROJECT_ROOT / "firmware_examples" / "cortex_m"
    deployed = firmware("digits", "cortex-m4")
    result = subprocess.run(
        [
            "cppcheck",
            "--enable=warning,style,performance,portability",
            "--error-exitcode=1",
            "--std=c99",
            "--quiet",
            "--suppress=missingIncludeSystem",
            "-DFW_COUNTER_HZ=25000000u",
            "-DUART_BASE=0x40004000u",
            "-DUART_CLOCK_HZ=25000000u",
            f"-I{firmware_dir}",
            f"-I{deployed}",
            f"-I{deployed / 'kernels' / 'include'}",
            *[str(p) for p in sorted(firmware_dir.glob("*.c"))],
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


# QEMU -----------------------------------------------------------------------


def _samples(model: str, out: Path, digits_tflite: tuple[Path, np.ndarray]) -> list[Any]:
    report, _, graph = load_deployment(out)
    if model == "digits":
        return prepare_inputs(digits_tflite[1], report["inputs"])
    return random_inputs(graph, 5, seed=1)


@pytest.mark.slow
@pytest.mark.parametrize("target", MUST_SHOW)
@pytest.mark.parametrize("model", MODELS)
def test_matches_tflm_in_qemu(
    firmware: Any, digits_tflite: tuple[Path, np.ndarray], model: str, target: str
) -> None:
    """The firmware in QEMU, driven over the serial protocol, gives TFLM's
    outputs exactly (resnet8, dscnn: 5 random inputs; digits: 20 real test
    images)."""
    _emulator()
    out = firmware(model, target)
    samples = _samples(model, out, digits_tflite)
    report, flatbuffer, _ = load_deployment(out)
    with connect(out, emulate=True) as device:
        results = run_samples(device, report, samples)
    interpreter = make_interpreter(flatbuffer)
    for sample, ours in zip(samples, results, strict=True):
        theirs = run_tflm(flatbuffer, sample, interpreter)
        for a, b in zip(ours.outputs, theirs, strict=True):
            np.testing.assert_array_equal(a, np.asarray(b).reshape(a.shape))
        assert ours.ticks > 0
        assert len(ours.layer_ticks) == len(report["layers"])
        # The reserved stack keeps at least half of itself spare.
        assert 0 < ours.stack_used <= report["firmware"]["stack_bytes"] // 2


@pytest.mark.slow
@pytest.mark.parametrize("target", ["cortex-m0", "cortex-m3", "cortex-m33"])
def test_digits_on_other_cores(
    firmware: Any, digits_tflite: tuple[Path, np.ndarray], target: str
) -> None:
    _emulator()
    out = firmware("digits", target)
    result = validate(out, inputs=None, count=5, emulate=True)
    assert result.ok, result.summary()
    assert "QEMU" in result.summary()


@pytest.mark.slow
def test_instruction_counts_repeat_exactly(firmware: Any) -> None:
    """Two QEMU sessions, -icount shift=0: the same per-layer counts."""
    _emulator()
    out = firmware("dscnn_kws_int8", "cortex-m4")
    report, _, graph = load_deployment(out)
    sample = random_inputs(graph, 1, seed=3)
    runs = []
    for _ in range(2):
        with connect(out, emulate=True) as device:
            runs.append(run_samples(device, report, sample * 2))
    counts = [r.layer_ticks for session in runs for r in session]
    assert all(c == counts[0] for c in counts)
    assert all(c > 0 for i, c in enumerate(counts[0]) if report["layers"][i]["macs"])
    assert runs[0][0].ticks == runs[1][1].ticks


@pytest.mark.slow
def test_cli_run_and_validate(firmware: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    _emulator()
    out = firmware("dscnn_kws_int8", "cortex-m4")
    assert main(["run", str(out), "--emulate", "--count", "2"]) == 0
    printed = capsys.readouterr().out
    assert "per-layer instructions of input 0 on QEMU mps2-an386" in printed
    assert "DEPTHWISE_CONV_2D" in printed
    assert "instructions/MAC" in printed
    assert main(["validate", str(out), "--emulate", "--count", "3"]) == 0
    assert "PASS" in capsys.readouterr().out


def test_cli_run_rejects_zero_inputs(firmware: Any, capsys: pytest.CaptureFixture[str]) -> None:
    from toolkit.cli import main

    out = firmware("dscnn_kws_int8", "cortex-m4")
    assert main(["run", str(out), "--emulate", "--count", "0"]) == 1
    assert "--count is 0; give at least 1 input" in capsys.readouterr().err


def test_run_needs_an_emulator_or_a_port(firmware: Any) -> None:
    board = firmware("dscnn_kws_int8", "stm32f746")
    no_emulator = "stm32f746 .* has no emulator; run it on the board"
    with pytest.raises(ToolkitError, match=no_emulator), connect(board, emulate=True):
        pass
    missing = "/dev/toolkit-no-such-port"
    with (
        pytest.raises(ToolkitError, match=f"cannot open serial port {missing}"),
        connect(board, port=missing),
    ):
        pass


# A damaging line -------------------------------------------------------------


class DamagingProxy:
    """A TCP relay on 127.0.0.1 between the host and QEMU's UART that flips
    and drops bytes at random (fixed seeds), in both directions."""

    def __init__(self, upstream_port: int, flip: float, drop: float, seed: int = 0):
        self.upstream_port = upstream_port
        self.flip = flip
        self.drop = drop
        self.seed = seed
        self.flipped = 0
        self.dropped = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _damage(self, data: bytes, rng: np.random.Generator) -> bytes:
        out = bytearray()
        for byte in data:
            roll = rng.random()
            if roll < self.drop:
                self.dropped += 1
                continue
            if roll < self.drop + self.flip:
                self.flipped += 1
                byte ^= 1 << int(rng.integers(8))
            out.append(byte)
        return bytes(out)

    def _pump(self, source: socket.socket, sink: socket.socket, stream: int) -> None:
        # One generator per direction: a numpy Generator is not thread-safe.
        rng = np.random.default_rng([self.seed, stream])
        source.settimeout(0.1)
        while not self.stop.is_set():
            try:
                data = source.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not data:
                return
            try:
                sink.sendall(self._damage(data, rng))
            except OSError:
                return

    def _serve(self) -> None:
        client, _ = self.listener.accept()
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        other = threading.Thread(target=self._pump, args=(upstream, client, 1), daemon=True)
        other.start()
        self._pump(client, upstream, 0)
        other.join()
        client.close()
        upstream.close()

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        self.thread.join(timeout=5)


@pytest.mark.slow
@pytest.mark.parametrize(
    "seed", [int(s) for s in os.environ.get("TOOLKIT_PROXY_SEEDS", "5 6 7").split()]
)
def test_damaging_proxy_still_gives_tflm_outputs(
    firmware: Any, digits_tflite: tuple[Path, np.ndarray], seed: int
) -> None:
    """About 1 byte in 500 flipped and 1 in 500 dropped, both ways: the
    retries recover and every output still equals TFLM's. (A frame of the
    test's size then arrives intact about 70% of the time, so 16 attempts
    fail together with a chance near 1e-8.)"""
    _emulator()
    out = firmware("digits", "cortex-m4")
    report, flatbuffer, _ = load_deployment(out)
    samples = prepare_inputs(digits_tflite[1][:10], report["inputs"])
    with QemuBoard(out / "firmware.elf", "mps2-an386") as board:
        proxy = DamagingProxy(board.port, flip=1 / 500, drop=1 / 500, seed=seed)
        try:
            device = Device(
                open_port(f"socket://127.0.0.1:{proxy.port}"), "proxy", timeout=0.5, retries=16
            )
            with device:
                device.check_model(model_crc(out), out)
                results = run_samples(device, report, samples)
        finally:
            proxy.close()
    interpreter = make_interpreter(flatbuffer)
    for sample, ours in zip(samples, results, strict=True):
        expected = np.asarray(run_tflm(flatbuffer, sample, interpreter)[0])
        np.testing.assert_array_equal(ours.outputs[0], expected.reshape(ours.outputs[0].shape))
    assert proxy.flipped > 0
    assert proxy.dropped > 0
    assert device.stats.retries > 0
    print(f"proxy flipped {proxy.flipped} and dropped {proxy.dropped} bytes; {device.stats}")


@pytest.mark.slow
def test_hopeless_line_fails_in_bounded_time(firmware: Any) -> None:
    """Every other byte damaged: no frame survives, and the host raises an
    error after its retries."""
    _emulator()
    out = firmware("digits", "cortex-m4")
    with QemuBoard(out / "firmware.elf", "mps2-an386") as board:
        proxy = DamagingProxy(board.port, flip=0.5, drop=0.0, seed=1)
        try:
            started = time.monotonic()
            device = Device(
                open_port(f"socket://127.0.0.1:{proxy.port}"), "proxy", timeout=0.3, retries=4
            )
            with (
                device,
                pytest.raises(ToolkitError, match="no valid reply to INFO after 4 attempts"),
            ):
                device.info()
            assert time.monotonic() - started < 10
        finally:
            proxy.close()


@pytest.mark.slow
def test_board_reset_during_a_run_is_survived(firmware: Any) -> None:
    """QEMU's board reset between writing the input and invoking: the host
    reads the boot frame, starts the run over and still gets TFLM's output."""
    _emulator()
    out = firmware("dscnn_kws_int8", "cortex-m4")
    report, flatbuffer, graph = load_deployment(out)
    sample = random_inputs(graph, 1, seed=4)
    with QemuBoard(out / "firmware.elf", "mps2-an386", monitor=True) as board:
        device = Device(open_port(board.url), "QEMU", timeout=1.0)
        invoke = device.invoke
        resets = []

        def reset_first(*args: Any) -> tuple[int, int]:
            if not resets:
                resets.append(1)
                board.reset()
            return invoke(*args)

        device.invoke = reset_first  # type: ignore[method-assign]
        with device:
            result = run_samples(device, report, sample)[0]
    expected = np.asarray(run_tflm(flatbuffer, sample[0])[0])
    np.testing.assert_array_equal(result.outputs[0], expected.reshape(result.outputs[0].shape))
    assert device.stats.resets == 1


# Flashing --------------------------------------------------------------------


def _fake_tool(directory: Path, name: str, output: str, status: int) -> None:
    script = directory / name
    script.write_text(
        f'#!/bin/sh\necho "$0 $*" > "{directory}/{name}.args"\necho "{output}"\nexit {status}\n'
    )
    script.chmod(script.stat().st_mode | stat.S_IEXEC)


def test_flash_without_tools_says_what_to_install(
    firmware: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.flash import flash

    board = firmware("dscnn_kws_int8", "stm32f746")
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(ToolkitError, match="no flashing tool found .*pip install pyocd.*openocd"):
        flash(board)


def test_flash_without_probe_says_so(
    firmware: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from toolkit.flash import flash

    board = firmware("dscnn_kws_int8", "stm32f746")
    _fake_tool(tmp_path, "pyocd", "0000000:WARNING:No available debug probes are connected", 1)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ToolkitError, match="pyocd found no debug probe for stm32f746"):
        flash(board)


@pytest.mark.parametrize("tool", ["pyocd", "openocd"])
def test_flash_command_lines(
    firmware: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, tool: str
) -> None:
    from toolkit.flash import flash

    board = firmware("dscnn_kws_int8", "stm32l476")
    _fake_tool(tmp_path, tool, "done", 0)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")
    flash(board, tool=tool, probe="0668FF")
    args = (tmp_path / f"{tool}.args").read_text()
    elf = str(board / "firmware.elf")
    if tool == "pyocd":
        assert f"flash --target stm32l476rg --uid 0668FF {elf}" in args
    else:
        assert "-c adapter serial 0668FF -f board/st_nucleo_l4.cfg" in args
        assert f"program {elf} verify reset exit" in args


def test_flash_refuses_an_emulated_target(firmware: Any) -> None:
    from toolkit.flash import flash

    with pytest.raises(ToolkitError, match="runs in QEMU .*toolkit run .* --emulate"):
        flash(firmware("dscnn_kws_int8", "cortex-m4"))


@pytest.mark.slow
def test_digits_example_in_qemu(tmp_path: Path) -> None:
    """`toolkit example --target cortex-m4`: all 450 test digits through the
    firmware in QEMU, identical to TFLM."""
    from toolkit.examples.digits import run_example

    _emulator()
    result = run_example(tmp_path / "digits", epochs=3, target="cortex-m4")
    assert result.agree
    assert result.tflite_accuracy == result.c_accuracy
    assert "generated C (cortex-m4 in QEMU)" in result.summary()


@pytest.mark.slow
def test_find_layer_on_the_device(firmware: Any, tmp_path: Path) -> None:
    """A weight of layer 1 edited in the C and rebuilt: validation in QEMU
    fails, and the layer-by-layer run on the device names layer 1."""
    import shutil

    from toolkit.firmware import rebuild

    _emulator()
    out = tmp_path / "edited"
    shutil.copytree(firmware("digits", "cortex-m4"), out)
    weights = out / "model_weights.c"
    head = "const int8_t model_l1_weights[4608] = {\n    "
    text = weights.read_text()
    start = text.index(head) + len(head)
    end = text.index(",", start)
    value = int(text[start:end])
    weights.write_text(text[:start] + str(value - 100 if value > 0 else value + 100) + text[end:])
    rebuild(out)

    result = validate(out, count=5, emulate=True, find_layer=True)
    assert not result.ok
    assert result.first_mismatch is not None
    assert result.first_mismatch.layer == 1
    assert result.first_mismatch.op == "CONV_2D"
    assert "first differing layer: 1 (CONV_2D" in result.summary()

"""The generated C: strict compiles, sanitizers, cppcheck, cross-compiling,
its Makefile, and byte-for-byte reproducibility."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from tests.helpers import PROJECT_ROOT, require_tool, shared_model
from toolkit.build import WARNING_FLAGS, build_host_executable
from toolkit.deploy import deploy
from toolkit.reference import make_interpreter, run_tflm
from toolkit.validate import load_deployment, random_inputs

MODELS = ["resnet8_cifar10_int8", "dscnn_kws_int8", "autoencoder_toyadmos_int8"]
CPPCHECK = [
    "cppcheck",
    "--enable=warning,style,performance,portability",
    "--error-exitcode=1",
    "--std=c99",
    "--quiet",
]


@pytest.fixture(scope="module")
def deployments(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("generated")
    return {name: deploy(shared_model(f"{name}.tflite"), root / name).out_dir for name in MODELS}


def _c_files(directory: Path) -> list[Path]:
    return [
        directory / "model.c",
        directory / "model_weights.c",
        *sorted((directory / "kernels" / "src").glob("*.c")),
    ]


@pytest.mark.parametrize("name", MODELS)
def test_compiles_strict_c99(deployments: dict[str, Path], name: str, tmp_path: Path) -> None:
    directory = deployments[name]
    for source in _c_files(directory):
        result = subprocess.run(
            [
                "gcc",
                *WARNING_FLAGS,
                "-O2",
                f"-I{directory}",
                f"-I{directory}/kernels/include",
                "-c",
                str(source),
                "-o",
                str(tmp_path / "out.o"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{source}:\n{result.stderr}"


@pytest.mark.slow
@pytest.mark.parametrize("name", MODELS)
def test_sanitizers_clean_and_exact(
    deployments: dict[str, Path], name: str, tmp_path: Path
) -> None:
    """The Linux runner built with AddressSanitizer and UndefinedBehaviorSanitizer
    runs 20 inputs without a report and gives TFLM's outputs."""
    directory = deployments[name]
    report, flatbuffer, graph = load_deployment(directory)
    runner = build_host_executable(directory, tmp_path / "runner", sanitize=True)
    samples = random_inputs(graph, 20, seed=3)
    (tmp_path / "in.bin").write_bytes(b"".join(x.tobytes() for s in samples for x in s))

    env = dict(
        os.environ,
        ASAN_OPTIONS="detect_leaks=1:abort_on_error=0",
        UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1",
    )
    result = subprocess.run(
        [str(runner), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "runtime error" not in result.stderr
    assert "AddressSanitizer" not in result.stderr

    spec = report["outputs"][0]
    outputs = np.fromfile(tmp_path / "out.bin", dtype=spec["dtype"]).reshape(20, *spec["shape"])
    interpreter = make_interpreter(flatbuffer)
    for sample, ours in zip(samples, outputs, strict=True):
        theirs = run_tflm(flatbuffer, sample, interpreter)[0]
        np.testing.assert_array_equal(ours, theirs)


def test_runner_rejects_short_input(deployments: dict[str, Path], tmp_path: Path) -> None:
    runner = build_host_executable(deployments["autoencoder_toyadmos_int8"], tmp_path / "runner")
    (tmp_path / "in.bin").write_bytes(bytes(100))
    result = subprocess.run(
        [str(runner), str(tmp_path / "in.bin"), str(tmp_path / "out.bin")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 1
    assert "ends inside record 0" in result.stderr


def test_cppcheck_kernels() -> None:
    require_tool("cppcheck")
    csrc = PROJECT_ROOT / "csrc"
    result = subprocess.run(
        [*CPPCHECK, f"-I{csrc / 'include'}", str(csrc / "src")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", MODELS)
def test_cppcheck_generated(deployments: dict[str, Path], name: str) -> None:
    require_tool("cppcheck")
    directory = deployments[name]
    sources = [directory / "model.c"]
    # cppcheck 2.10 needs minutes for a weight initializer of 78k values
    # (resnet8). The weights file is plain data from one generator, so the
    # smallest model covers it.
    if (directory / "model_weights.c").stat().st_size < 200_000:
        sources.append(directory / "model_weights.c")
    result = subprocess.run(
        [*CPPCHECK, f"-I{directory}", f"-I{directory / 'kernels' / 'include'}", *map(str, sources)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("cpu", ["cortex-m0", "cortex-m4", "cortex-m55"])
def test_cross_compiles_for_cortex_m(
    deployments: dict[str, Path], cpu: str, tmp_path: Path
) -> None:
    require_tool("arm-none-eabi-gcc")
    directory = deployments["dscnn_kws_int8"]
    for source in _c_files(directory):
        result = subprocess.run(
            [
                "arm-none-eabi-gcc",
                f"-mcpu={cpu}",
                "-mthumb",
                *WARNING_FLAGS,
                "-Os",
                f"-I{directory}",
                f"-I{directory}/kernels/include",
                "-c",
                str(source),
                "-o",
                str(tmp_path / "out.o"),
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        assert result.returncode == 0, f"{source} for {cpu}:\n{result.stderr}"


def test_makefile_builds(deployments: dict[str, Path], tmp_path: Path) -> None:
    require_tool("make")
    import shutil

    directory = tmp_path / "copy"
    shutil.copytree(deployments["autoencoder_toyadmos_int8"], directory)
    result = subprocess.run(
        ["make", "-s", "-C", str(directory), "all", "shared"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert (directory / "libmodel.a").is_file()
    assert (directory / "libmodel.so").is_file()


def test_output_reproducible(tmp_path: Path) -> None:
    model = shared_model("dscnn_kws_int8.tflite")
    first = deploy(model, tmp_path / "a", build=False).out_dir
    second = deploy(model, tmp_path / "b", build=False).out_dir
    for path in sorted(first.rglob("*")):
        if path.is_file() and path.name != "report.json":
            assert path.read_bytes() == (second / path.relative_to(first)).read_bytes(), path


def test_arena_declared_in_header(deployments: dict[str, Path]) -> None:
    report, _, _ = load_deployment(deployments["dscnn_kws_int8"])
    header = (deployments["dscnn_kws_int8"] / "model.h").read_text()
    assert f"#define MODEL_ARENA_SIZE {report['arena_bytes']}\n" in header

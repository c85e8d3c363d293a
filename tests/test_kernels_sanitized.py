"""Re-run tests/test_kernels.py on kernels built with AddressSanitizer and
UndefinedBehaviorSanitizer.

The kernel library is loaded into an uninstrumented Python, so the ASan
runtime has to be preloaded with LD_PRELOAD. gcc links the UBSan runtime
(libubsan.so) as a dependency of the library, where the dynamic loader finds
it by itself. A canary test first builds a small library with known errors
the same way and checks that both sanitizers abort on them, so that a green
sanitized run means the checks were live.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.kernel_library import CFLAGS, SANITIZE_FLAGS

REPOSITORY = Path(__file__).resolve().parent.parent
KERNEL_TESTS = [
    Path(__file__).resolve().parent / "test_kernels.py",
    Path(__file__).resolve().parent / "test_codebook_kernels.py",
    Path(__file__).resolve().parent / "test_sparse_kernels.py",
]

# Maximum examples per property test in the sanitized run, fewer than in the
# plain run because ASan and UBSan make each kernel call several times slower.
SANITIZED_EXAMPLES = 300
# Upper bound for the whole sanitized run, which took about 25 s on a 2-core
# machine.
SANITIZED_RUN_TIMEOUT_SECONDS = 900


def skip_or_fail(reason: str) -> None:
    """Skip the test, or fail it when the CI environment variable is set,
    because CI must run the sanitizers."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason}, but CI must run the sanitized kernel tests")
    pytest.skip(reason)


def sanitizer_environment() -> dict[str, str]:
    """Return the environment for a sanitized subprocess, or skip without gcc or libasan."""
    gcc = shutil.which("gcc")
    if gcc is None:
        skip_or_fail("gcc is not installed")
    assert gcc is not None
    printed = subprocess.run(
        [gcc, "-print-file-name=libasan.so"], capture_output=True, text=True, check=False
    ).stdout.strip()
    # gcc prints the bare name when it has no such file.
    libasan = Path(printed)
    if not libasan.is_absolute() or not libasan.exists():
        skip_or_fail(f"libasan is not installed (gcc -print-file-name=libasan.so gave {printed!r})")

    preload = " ".join(filter(None, [str(libasan), os.environ.get("LD_PRELOAD")]))
    return dict(
        os.environ,
        TOOLKIT_SANITIZE="1",
        TOOLKIT_MAX_EXAMPLES=str(SANITIZED_EXAMPLES),
        LD_PRELOAD=preload,
        # The Python interpreter's own allocations are never freed at exit.
        ASAN_OPTIONS="detect_leaks=0",
        UBSAN_OPTIONS="print_stacktrace=1",
    )


CANARY_SOURCE = textwrap.dedent(
    """
    #include <limits.h>
    #include <stdlib.h>

    int canary_signed_overflow(int x) { return x + INT_MAX; }

    int canary_heap_overflow(int size) {
      volatile char *buffer = calloc((size_t)size, 1);
      int value;
      if (buffer == NULL) {
        return 0;
      }
      value = buffer[size];
      free((void *)buffer);
      return value;
    }
    """
)

CANARY_CALL = textwrap.dedent(
    """
    import sys
    from cffi import FFI

    ffi = FFI()
    ffi.cdef("int canary_signed_overflow(int x); int canary_heap_overflow(int size);")
    lib = ffi.dlopen(sys.argv[1])
    getattr(lib, sys.argv[2])(int(sys.argv[3]))
    """
)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("function", "argument", "report"),
    [
        ("canary_signed_overflow", 1, "runtime error: signed integer overflow"),
        ("canary_heap_overflow", 16, "heap-buffer-overflow"),
    ],
    ids=["ubsan", "asan"],
)
def test_sanitizers_abort_on_canary_errors(
    tmp_path: Path, function: str, argument: int, report: str
) -> None:
    environment = sanitizer_environment()
    source = tmp_path / "canary.c"
    source.write_text(CANARY_SOURCE)
    library = tmp_path / "libcanary.so"
    build = subprocess.run(
        ["gcc", *CFLAGS, *SANITIZE_FLAGS, "-o", str(library), str(source)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stderr

    call = subprocess.run(
        [sys.executable, "-c", CANARY_CALL, str(library), function, str(argument)],
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=120,
    )

    assert call.returncode != 0, f"{function} ran without a sanitizer error:\n{call.stderr}"
    assert report in call.stderr, call.stderr


@pytest.mark.slow
def test_kernels_pass_under_sanitizers() -> None:
    environment = sanitizer_environment()
    command = [
        sys.executable,
        "-m",
        "pytest",
        *map(str, KERNEL_TESTS),
        "-v",
        "-p",
        "no:cacheprovider",
        # The sanitizers write their report to file descriptor 2 and exit at
        # once, so pytest's default fd capture would swallow the report.
        "--capture=sys",
    ]

    result = subprocess.run(
        command,
        cwd=REPOSITORY,
        capture_output=True,
        text=True,
        env=environment,
        check=False,
        timeout=SANITIZED_RUN_TIMEOUT_SECONDS,
    )

    assert result.returncode == 0, (
        f"{' '.join(command)} exited with {result.returncode} under the sanitizers:\n"
        f"{result.stdout}\n{result.stderr}"
    )

"""Small helpers that format C source text."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_C_KEYWORDS = frozenset(
    [
        "auto",
        "break",
        "case",
        "char",
        "const",
        "continue",
        "default",
        "do",
        "double",
        "else",
        "enum",
        "extern",
        "float",
        "for",
        "goto",
        "if",
        "inline",
        "int",
        "long",
        "register",
        "restrict",
        "return",
        "short",
        "signed",
        "sizeof",
        "static",
        "struct",
        "switch",
        "typedef",
        "union",
        "unsigned",
        "void",
        "volatile",
        "while",
        "_Bool",
        "_Complex",
        "_Imaginary",
    ]
)
_C_TYPES = {
    "int8": "int8_t",
    "uint8": "uint8_t",
    "uint16": "uint16_t",
    "int32": "int32_t",
    "float32": "float",
    "int16": "int16_t",
}


def check_identifier(name: str) -> str:
    """Return `name` if it is a valid C identifier and not a keyword."""
    if not _IDENTIFIER.match(name) or name in _C_KEYWORDS:
        raise ValueError(f"'{name}' is not a valid C identifier")
    return name


def c_type(dtype: str) -> str:
    """Return the C element type of a tensor type."""
    try:
        return _C_TYPES[dtype]
    except KeyError:
        raise ValueError(f"no C type for tensor type {dtype}") from None


def comment_text(text: str) -> str:
    """Text safe inside a C block comment (tensor names come from the model)."""
    return text.replace("*/", "* /").replace("\n", " ")


def int_list(values: Iterable[int], per_line: int = 16, indent: str = "    ") -> str:
    """Comma-separated integers wrapped `per_line` to a line."""
    items = [str(int(v)) for v in values]
    lines = [", ".join(items[i : i + per_line]) for i in range(0, len(items), per_line)]
    return (",\n" + indent).join(lines)


def array_definition(
    name: str, dtype: str, values: np.ndarray, static: bool = False, section: str = ""
) -> str:
    """Write a `const` array definition of `values`, flattened in C order.

    The values are written as decimal integers, so the text does not depend
    on the host's byte order.
    """
    flat = np.asarray(values).reshape(-1)
    storage = "static " if static else ""
    return (
        f"{storage}const {c_type(dtype)} {check_identifier(name)}[{max(flat.size, 1)}]{section} = "
        f"{{\n    {int_list(flat) if flat.size else '0'}\n}};\n"
    )


def dims_initializer(shape: Sequence[int]) -> str:
    """Write a tk_dims initializer for a shape of rank 1 to 4 (left-padded with 1)."""
    padded = [1] * (4 - len(shape)) + [int(d) for d in shape]
    if len(padded) != 4:
        raise ValueError(f"shape {list(shape)} has more than 4 dimensions")
    return "{{{}, {}, {}, {}}}".format(*padded)

"""The deploy report: a JSON-ready dict and its printed form."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def _shape(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _bytes(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def format_table(headers: Sequence[str], rows: Sequence[Sequence[str]], right: set[int]) -> str:
    """Format a plain-text table whose columns in `right` are right-aligned."""
    widths = [len(h) for h in headers]
    for row in rows:
        widths = [max(w, len(cell)) for w, cell in zip(widths, row, strict=True)]

    def line(cells: Sequence[str]) -> str:
        parts = [
            cell.rjust(width) if i in right else cell.ljust(width)
            for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    separator = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), separator, *(line(row) for row in rows)])


def format_report(report: dict[str, Any]) -> str:
    """Format the human-readable summary that `toolkit deploy` prints."""
    tflm = report.get("tflm_arena") or {}
    lines = [
        f"model:   {report['source']}",
        f"target:  {report['target']}    output: {report['out_dir']}",
        "",
        f"weights: {_bytes(report['weight_bytes'])} bytes packed "
        f"({_bytes(report['tflite_bytes'])} bytes in the .tflite file)",
        f"code:    {_bytes(report.get('code_bytes'))} bytes "
        f"({report.get('code_bytes_note', 'not measured')})",
        f"arena:   {_bytes(report['arena_bytes'])} bytes "
        f"(TFLM: {_bytes(tflm.get('total'))} total, {_bytes(tflm.get('head'))} for "
        f"activations; live-tensor lower bound {_bytes(report['peak_live_bytes'])})",
        "",
    ]
    if report.get("firmware"):
        from toolkit.firmware import format_size

        lines.insert(len(lines) - 1, format_size(report["firmware"]))
    int8_bytes = report.get("int8_weight_bytes", 0)
    if int8_bytes:
        packed = report["packed_weight_bytes"]
        lines.insert(
            4,
            f"         {packed:,} bytes of weights against {int8_bytes:,} at int8 "
            f"({packed / int8_bytes:.3f}x; biases not counted)",
        )
    lines.append(format_table(*_layer_table(report)))
    for warning in report.get("warnings", []):
        lines.append(f"warning: {warning}")
    return "\n".join(lines)


def _layer_table(report: dict[str, Any]) -> tuple[list[str], list[list[str]], set[int]]:
    headers = [
        "#",
        "op",
        "input",
        "output",
        "params",
        "MACs",
        "weight bytes",
        "format",
        "sparsity",
        "bits/weight",
        "values",
        "table",
        "indices",
        "vs int8",
    ]
    rows = []
    for layer in report["layers"]:
        int8_bytes = layer.get("int8_weight_bytes", 0)
        sparsity = f"{layer.get('sparsity', 0.0):.0%}" if int8_bytes else ""
        packing = ["", "", "", "", ""]
        if int8_bytes and layer["format"] != "int8":
            packed = layer["value_bytes"] + layer["codebook_bytes"] + layer["index_bytes"]
            packing = [
                f"{layer['bits_per_weight']:.2f}",
                f"{layer['value_bytes']:,}",
                f"{layer['codebook_bytes']:,}",
                f"{layer['index_bytes']:,}",
                f"{packed / int8_bytes:.3f}",
            ]
        rows.append(
            [
                str(layer["index"]),
                layer["op"],
                ", ".join(_shape(s) for s in layer["input_shapes"]),
                _shape(layer["output_shape"]),
                f"{layer['parameters']:,}",
                f"{layer['macs']:,}",
                f"{layer['weight_bytes']:,}",
                layer["format"],
                sparsity,
                *packing,
            ]
        )
    total_macs = sum(layer["macs"] for layer in report["layers"])
    total_params = sum(layer["parameters"] for layer in report["layers"])
    total = [
        "",
        "total",
        "",
        "",
        f"{total_params:,}",
        f"{total_macs:,}",
        f"{report['weight_bytes']:,}",
    ]
    total += [""] * (len(headers) - len(total))
    rows.append(total)
    return headers, rows, {0, 4, 5, 6, 8, 9, 10, 11, 12, 13}

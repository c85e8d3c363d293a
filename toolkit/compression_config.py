"""Compression settings for `toolkit deploy`: from flags or a JSON file.

A compression config file is a JSON object such as

    {"prune": "0.8", "cluster": 16,
     "layers": {"dense_1": {"cluster": 4, "prune": "2:4"}, "conv2d": {"cluster": null}}}

`prune` (a pruning spec, see toolkit.pack.prune_int8.SPEC_HELP) and
`cluster` (shared values per output channel) apply to every Dense, Conv2D
and DepthwiseConv2D layer. An entry under `layers` overrides them for one
layer, named by its Keras layer name or, for a `.tflite` model, by its
output tensor name. A null value leaves that layer alone. Pruning runs first,
then weight sharing, as in Deep Compression.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

from toolkit.errors import ToolkitError
from toolkit.pack.prune_int8 import PruningSpec, parse_spec

_TOP_LEVEL_KEYS = {"cluster", "prune", "layers"}
_LAYER_KEYS = {"cluster", "prune"}


@dataclass
class CompressionSettings:
    """Clusters per layer: `cluster` for every layer unless `layers` names it."""

    cluster: int | None = None
    layers: dict[str, int | None] = field(default_factory=dict)
    prune: PruningSpec | None = None
    prune_layers: dict[str, PruningSpec | None] = field(default_factory=dict)

    @property
    def enabled(self) -> bool:
        return self.cluster is not None or any(v is not None for v in self.layers.values())

    @property
    def pruning(self) -> bool:
        return self.prune is not None or any(v is not None for v in self.prune_layers.values())

    def prune_groups(self, all_layers: list[str]) -> list[tuple[PruningSpec, list[str]]]:
        """(spec, layer names) pairs covering every layer that is pruned."""
        grouped: dict[PruningSpec, list[str]] = {}
        for name in all_layers:
            spec = self.prune_layers.get(name, self.prune)
            if spec is not None:
                grouped.setdefault(spec, []).append(name)
        return list(grouped.items())

    def groups(self) -> dict[int, list[str] | None]:
        """Clusters -> layer names (None: every layer not named elsewhere)."""
        grouped: dict[int, list[str] | None] = {}
        for name, clusters in self.layers.items():
            if clusters is not None:
                names = grouped.setdefault(clusters, [])
                assert names is not None
                names.append(name)
        return grouped

    def excluded(self) -> list[str]:
        """Layers named in `layers`, which the default setting skips."""
        return list(self.layers)


def _check_clusters(value: Any, where: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 256:
        raise ToolkitError(
            f"{where}: cluster must be an integer in 1..256 (or null in a config file), "
            f"got {value!r}"
        )
    return value


def _check_prune(value: Any, where: str) -> PruningSpec | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ToolkitError(f"{where}: prune must be a pruning spec string or null, got {value!r}")
    try:
        return parse_spec(value)
    except ToolkitError as exc:
        raise ToolkitError(f"{where}: {exc}") from None


def load_settings(
    path: str | os.PathLike[str] | None = None,
    cluster: int | None = None,
    prune: str | None = None,
) -> CompressionSettings:
    """Read a compression config file (if given); `cluster` and `prune` from
    the command line override the file's defaults."""
    settings = CompressionSettings()
    if path is not None:
        source = os.fspath(path)
        try:
            with open(source, encoding="utf-8") as handle:
                raw = json.load(handle)
        except FileNotFoundError:
            raise ToolkitError(f"{source}: compression config file not found") from None
        except json.JSONDecodeError as exc:
            raise ToolkitError(f"{source}: invalid JSON ({exc})") from exc
        if not isinstance(raw, dict) or set(raw) - _TOP_LEVEL_KEYS:
            keys = sorted(set(raw) - _TOP_LEVEL_KEYS) if isinstance(raw, dict) else raw
            raise ToolkitError(
                f"{source}: unknown settings {keys}; a compression config is a JSON object with "
                f"the keys {sorted(_TOP_LEVEL_KEYS)}"
            )
        settings.cluster = _check_clusters(raw.get("cluster"), source)
        settings.prune = _check_prune(raw.get("prune"), source)
        layers = raw.get("layers", {})
        if not isinstance(layers, dict):
            raise ToolkitError(f"{source}: 'layers' must map layer names to settings")
        for name, entry in layers.items():
            if not isinstance(entry, dict) or set(entry) - _LAYER_KEYS:
                raise ToolkitError(
                    f"{source}: layer '{name}' settings must be an object with the keys "
                    f"{sorted(_LAYER_KEYS)}, got {entry!r}"
                )
            if "cluster" in entry:
                settings.layers[name] = _check_clusters(entry["cluster"], f"{source}: '{name}'")
            if "prune" in entry:
                settings.prune_layers[name] = _check_prune(entry["prune"], f"{source}: '{name}'")
    if cluster is not None:
        settings.cluster = _check_clusters(cluster, "--cluster")
    if prune is not None:
        settings.prune = _check_prune(prune, "--prune")
    return settings

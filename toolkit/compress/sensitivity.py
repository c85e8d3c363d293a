"""Per-layer pruning sensitivity: how validation accuracy falls as one layer is pruned.

`scan` prunes one Dense, Conv2D or DepthwiseConv2D layer at a time, one-shot by
weight magnitude with the masks of `toolkit.compress.prune.pruning_mask`, and
measures the validation accuracy at each sparsity. `SensitivityScan.propose`
turns the scan into per-layer sparsities that meet a size target for the int8
weights, where a layer's weight bytes are its nonzero kernel weights. Biases
and layers outside the scan are not counted.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from toolkit.compress.cluster import _leaf_layers
from toolkit.compress.prune import (
    _check_granularity,
    _check_n_m,
    _check_pair,
    _check_sparsity,
    _choose_layers,
    pruning_mask,
    strip_pruning,
)
from toolkit.errors import ToolkitError

logger = logging.getLogger(__name__)

DEFAULT_SPARSITIES: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 0.9)


@dataclass(frozen=True)
class LayerSensitivity:
    """Scan results for one layer, keyed by scanned sparsity."""

    name: str
    parameters: int
    accuracy: dict[float, float]
    # Nonzero kernel weights after pruning, which are the layer's int8 weight bytes.
    # Block, channel and filter masks round to whole groups, so the count can differ
    # slightly from (1 - sparsity) * parameters.
    nonzero: dict[float, int]


@dataclass(frozen=True)
class SensitivityScan:
    """Validation accuracy of a model with one layer pruned at a time."""

    baseline_accuracy: float
    sparsities: tuple[float, ...]
    granularity: str
    samples: int
    rows: list[LayerSensitivity] = field(default_factory=list)

    @property
    def dense_bytes(self) -> int:
        """Int8 kernel bytes of the scanned layers without pruning."""
        return sum(row.parameters for row in self.rows)

    def table(self) -> str:
        """Format the scan as a text table, one line per layer."""
        name_width = max([len("layer"), *(len(row.name) for row in self.rows)])
        header = f"{'layer':<{name_width}}  {'parameters':>10}" + "".join(
            f"  {sparsity:>7.0%}" for sparsity in self.sparsities
        )
        lines = [
            f"baseline accuracy {self.baseline_accuracy:.2%} on {self.samples} samples, "
            f"{self.granularity} pruning of one layer at a time",
            header,
        ]
        for row in self.rows:
            cells = "".join(f"  {row.accuracy[s]:>7.2%}" for s in self.sparsities)
            lines.append(f"{row.name:<{name_width}}  {row.parameters:>10}{cells}")
        return "\n".join(lines)

    def propose(
        self,
        target_bytes: int | None = None,
        target_ratio: float | None = None,
        max_drop: float = 0.01,
    ) -> dict[str, float]:
        """Choose a scanned sparsity per layer so that the int8 kernel bytes meet a target.

        Pass either `target_bytes` or `target_ratio`, the fraction of the dense int8
        kernel bytes of the scanned layers. Each layer first gets the highest
        sparsity whose accuracy drop from the baseline is at most `max_drop`. While
        the total is above the target, the layer change with the smallest accuracy
        drop per byte saved is applied. Drops add up only as an estimate, because
        the scan pruned one layer at a time.

        Raises ToolkitError for invalid arguments, and when even the highest
        scanned sparsity of every layer cannot reach the target.
        """
        target = self._target_bytes(target_bytes, target_ratio)
        if isinstance(max_drop, bool) or not isinstance(max_drop, int | float) or max_drop < 0:
            raise ToolkitError(f"max_drop is {max_drop!r}, expected an accuracy drop >= 0.")
        if not self.rows:
            raise ToolkitError("The scan has no layers, so there is nothing to propose.")

        smallest = sum(min(row.nonzero.values()) for row in self.rows)
        if smallest > target:
            raise ToolkitError(
                f"Target of {target} int8 weight bytes ({target / self.dense_bytes:.1%} of "
                f"{self.dense_bytes}) is not reachable: the highest scanned sparsity "
                f"({max(self.sparsities):.0%}) in every layer gives {smallest} bytes "
                f"({smallest / self.dense_bytes:.1%}). Scan higher sparsities or relax the target."
            )

        chosen = {row.name: self._within_drop(row, max_drop) for row in self.rows}
        while self._total_bytes(chosen) > target:
            step = self._cheapest_step(chosen)
            # The reachability check above guarantees a step while bytes can still be saved.
            assert step is not None
            name, sparsity = step
            chosen[name] = sparsity

        logger.info(
            "proposed sparsities %s give %d of %d int8 weight bytes (target %d)",
            chosen,
            self._total_bytes(chosen),
            self.dense_bytes,
            target,
        )
        return chosen

    def weight_bytes(self, sparsities: dict[str, float]) -> int:
        """Return the int8 kernel bytes of the scanned layers at the given sparsities.

        Layers missing from `sparsities` count as dense. Every value must be a
        scanned sparsity of its layer.
        """
        for name, sparsity in sparsities.items():
            row = self._row(name)
            if sparsity not in row.nonzero:
                raise ToolkitError(
                    f"Sparsity {sparsity} of layer {name!r} was not scanned. Scanned "
                    f"sparsities: {', '.join(str(s) for s in self.sparsities)}."
                )
        return self._total_bytes({row.name: sparsities.get(row.name, 0.0) for row in self.rows})

    def _target_bytes(self, target_bytes: int | None, target_ratio: float | None) -> float:
        if (target_bytes is None) == (target_ratio is None):
            raise ToolkitError(
                f"propose received target_bytes={target_bytes!r} and target_ratio="
                f"{target_ratio!r}, expected exactly one of them."
            )
        if target_bytes is not None:
            if (
                isinstance(target_bytes, bool)
                or not isinstance(target_bytes, int | np.integer)
                or target_bytes < 0
            ):
                raise ToolkitError(f"target_bytes is {target_bytes!r}, expected a byte count >= 0.")
            return float(target_bytes)
        if (
            isinstance(target_ratio, bool)
            or not isinstance(target_ratio, int | float)
            or not 0.0 < target_ratio <= 1.0
        ):
            raise ToolkitError(
                f"target_ratio is {target_ratio!r}, expected a fraction in (0, 1] of the "
                f"dense int8 weight bytes ({self.dense_bytes})."
            )
        return float(target_ratio) * self.dense_bytes

    def _row(self, name: str) -> LayerSensitivity:
        for row in self.rows:
            if row.name == name:
                return row
        names = ", ".join(row.name for row in self.rows)
        raise ToolkitError(f"Layer {name!r} is not in the scan. Scanned layers: {names}.")

    def _total_bytes(self, chosen: dict[str, float]) -> int:
        return sum(row.nonzero[chosen[row.name]] for row in self.rows)

    def _drop(self, row: LayerSensitivity, sparsity: float) -> float:
        return self.baseline_accuracy - row.accuracy[sparsity]

    def _within_drop(self, row: LayerSensitivity, max_drop: float) -> float:
        """Return the highest scanned sparsity of `row` that loses at most `max_drop`."""
        # A small tolerance keeps a drop of exactly max_drop from failing on float rounding.
        allowed = [s for s in self.sparsities if self._drop(row, s) <= max_drop + 1e-12]
        return max(allowed, default=0.0)

    def _cheapest_step(self, chosen: dict[str, float]) -> tuple[str, float] | None:
        """Return the (layer, sparsity) change with the smallest drop per byte saved.

        Every layer may move to any scanned sparsity that saves bytes, not only the
        next one, because the accuracy of a scan is not always monotonic. Ties go to
        the change that saves more bytes.
        """
        best: tuple[float, int, str, float] | None = None
        for row in self.rows:
            current = chosen[row.name]
            for sparsity in self.sparsities:
                saved = row.nonzero[current] - row.nonzero[sparsity]
                if saved <= 0:
                    continue
                cost = (self._drop(row, sparsity) - self._drop(row, current)) / saved
                if best is None or (cost, -saved) < (best[0], -best[1]):
                    best = (cost, saved, row.name, sparsity)
        return None if best is None else (best[2], best[3])


def scan(
    model: Any,
    x_val: Any,
    y_val: Any,
    sparsities: Sequence[float] | None = None,
    granularity: str = "unstructured",
    layers: list[str] | None = None,
    block: Sequence[int] = (1, 4),
    n_m: Sequence[int] = (2, 4),
    batch_size: int = 256,
) -> SensitivityScan:
    """Prune each chosen layer alone at each sparsity and measure the validation accuracy.

    `layers=None` scans every Dense, Conv2D and DepthwiseConv2D layer. The masks
    are those of `prune(model, sparsity, granularity, block, n_m, layers=[name])`.
    Accuracy is the fraction of samples whose output argmax equals the integer
    label in `y_val`. `sparsities` defaults to (0.0, 0.25, 0.5, 0.75, 0.9), or to
    (0.0, 1 - n / m) for "n:m", whose pattern fixes the sparsity. Sparsity 0.0
    is always scanned. The scan runs on a copy, so `model` is not modified, and
    pruned layers of `model` are scanned as their stripped kernels.

    Raises ToolkitError for invalid options, labels or layer names.
    """
    _check_granularity(granularity)
    block = _check_pair(block, "block")
    n, m = _check_n_m(n_m)
    scanned = _check_sparsities(sparsities, granularity, (n, m))
    x_val = np.asarray(x_val)
    labels = _check_labels(y_val, len(x_val))

    copy = strip_pruning(model)
    chosen = _choose_layers(copy, layers)
    targets = [layer for layer in _leaf_layers(copy) if id(layer) in chosen]

    def accuracy() -> float:
        outputs = np.asarray(copy.predict(x_val, batch_size=batch_size, verbose=0))
        return float(np.mean(np.argmax(outputs.reshape(len(x_val), -1), axis=1) == labels))

    baseline = accuracy()
    rows = []
    for layer in targets:
        kernel_variable = layer.kernel
        kernel = kernel_variable.numpy()
        depthwise = type(layer).__name__ == "DepthwiseConv2D"
        row_accuracy: dict[float, float] = {}
        nonzero: dict[float, int] = {}
        for sparsity in scanned:
            mask = pruning_mask(kernel, sparsity, granularity, block, (n, m), depthwise)
            if sparsity == 0.0:
                # "n:m" ignores the sparsity argument, so its dense case uses no mask.
                mask = np.ones_like(mask)
            masked = np.where(mask > 0, kernel, np.zeros_like(kernel))
            kernel_variable.assign(masked)
            row_accuracy[sparsity] = accuracy()
            nonzero[sparsity] = int(np.count_nonzero(masked))
        kernel_variable.assign(kernel)
        rows.append(LayerSensitivity(layer.name, int(kernel.size), row_accuracy, nonzero))
        logger.info("layer %s: accuracy %s", layer.name, row_accuracy)

    return SensitivityScan(baseline, scanned, granularity, len(labels), rows)


def _check_sparsities(
    sparsities: Sequence[float] | None, granularity: str, n_m: tuple[int, int]
) -> tuple[float, ...]:
    n, m = n_m
    pattern_sparsity = 1.0 - n / m
    if sparsities is None:
        sparsities = (0.0, pattern_sparsity) if granularity == "n:m" else DEFAULT_SPARSITIES
    if isinstance(sparsities, str) or not isinstance(sparsities, Sequence) or not sparsities:
        raise ToolkitError(
            f"sparsities is {sparsities!r}, expected a list of fractions in [0, 1) such as "
            f"{list(DEFAULT_SPARSITIES)}."
        )
    values = {_check_sparsity(value, "sparsities entry") for value in sparsities}
    if granularity == "n:m" and not values <= {0.0, pattern_sparsity}:
        raise ToolkitError(
            f"sparsities {list(sparsities)} are invalid for n:m pruning with n_m=({n}, {m}), "
            f"whose pattern fixes the sparsity at {pattern_sparsity}. Pass sparsities="
            f"[0.0, {pattern_sparsity}] or leave sparsities unset."
        )
    return tuple(sorted(values | {0.0}))


def _check_labels(y_val: Any, samples: int) -> np.ndarray:
    labels = np.asarray(y_val)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ToolkitError(
            f"y_val has shape {labels.shape} and dtype {labels.dtype}, expected integer class "
            "labels of shape [samples]. Convert one-hot labels with np.argmax(y, axis=1)."
        )
    if len(labels) != samples or samples == 0:
        raise ToolkitError(
            f"y_val has {len(labels)} labels for {samples} samples in x_val, expected the "
            "same nonzero number."
        )
    return labels

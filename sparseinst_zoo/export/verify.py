"""Check an exported model against the PyTorch model it came from, at the scale of each output.

Float32 rounding noise grows with a tensor's magnitude: trained mask logits reach about 300, where onnxruntime and
PyTorch differ by ~2e-3 on a few values (8e-6 of the output's scale). So each output is judged against its scale
(``max |diff| <= scale x max(max |reference|, 1)``), and what a user sees is judged directly: the probabilities
(sigmoid of every head), the final per-query scores, the labels where the reference's top class is clear, and the
fraction of mask pixels on the other side of the mask threshold. A real mismatch (a wrong weight, a wrong wrapper)
moves these by orders of magnitude more than the tolerances.

Example:
    >>> import numpy as np, torch
    >>> ref = (torch.zeros(1, 2, 3), torch.full((1, 2, 4, 4), 300.0), torch.zeros(1, 2, 1))
    >>> got = [ref[0].numpy(), ref[1].numpy() + 2e-3, ref[2].numpy()]
    >>> compare_outputs(("pred_logits", "pred_masks", "pred_scores"), ref, got)[1]
    []
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import SparseInstError
from ..inference.backends.base import ExportedBackend
from ..inference.backends.metadata import RAW_OUTPUTS
from ..inference.backends.onnxruntime import OnnxRuntimeBackend
from .wrapper import ExportWrapper, check_size, example_input, export_copy, postprocess_graph

__all__ = [
    "BF16_TOLERANCE",
    "EXACT_TOLERANCE",
    "HALF_TOLERANCE",
    "ExportMismatch",
    "Tolerance",
    "compare_outputs",
    "verify_export",
    "verify_onnx",
]


class ExportMismatch(SparseInstError):
    """An exported model's outputs differ from the PyTorch model's beyond the tolerance."""


@dataclass(frozen=True)
class Tolerance:
    """How far an exported model may be from PyTorch float32.

    Attributes:
        scale: per output, ``max |diff| <= scale * max(max |reference|, 1)``.
        probability: max difference of the probabilities (sigmoid of the heads, mask probabilities) and of the
            final per-query scores.
        mask_pixels: the fraction of mask pixels (at the input size) that may fall on the other side of the mask
            threshold.
    """

    scale: float = 1e-4
    probability: float = 1e-3
    mask_pixels: float = 1e-3


EXACT_TOLERANCE = Tolerance()  # float32 runtimes: onnxruntime, OpenVINO fp32
HALF_TOLERANCE = Tolerance(scale=0.05, probability=0.05, mask_pixels=0.05)  # float16 graph vs float32 PyTorch
BF16_TOLERANCE = Tolerance(scale=0.05, probability=0.05, mask_pixels=0.05)  # OpenVINO bf16 vs float32 PyTorch


def _max_diff(got: np.ndarray | torch.Tensor, ref: np.ndarray | torch.Tensor) -> float:
    diff = np.abs(np.asarray(got, np.float64) - np.asarray(ref, np.float64))
    return float(diff.max()) if diff.size else 0.0


def _clear_labels(pred_logits: torch.Tensor, margin: float) -> torch.Tensor:
    """Queries whose top class probability beats the second by more than ``margin`` (a label that cannot flip)."""
    top = pred_logits.float().sigmoid().topk(min(2, pred_logits.shape[-1]), dim=-1).values
    return (top[..., 0] - top[..., -1]) > margin if top.shape[-1] > 1 else torch.ones(top.shape[:-1], dtype=torch.bool)


def compare_outputs(
    names: Sequence[str],
    expected_raw: Sequence[torch.Tensor],
    got: Sequence[np.ndarray],
    input_size: Sequence[int] | None = None,
    tolerance: Tolerance = EXACT_TOLERANCE,
    mask_threshold: float = 0.45,
) -> tuple[dict[str, float], list[str]]:
    """Differences between an export's outputs ``got`` and the PyTorch heads ``expected_raw``, and the failures.

    ``names`` are the export's output names: the raw heads, or ``scores, labels, masks`` for a postprocessed graph
    (then the reference is postprocessed the same way, at ``input_size``, default 4x the mask size). Returns
    ``{what: difference}`` and one message per check outside ``tolerance`` (empty when the export matches).
    """
    raw = tuple(names) == RAW_OUTPUTS
    size = tuple(input_size) if input_size is not None else tuple(4 * s for s in expected_raw[1].shape[-2:])
    expected_post = postprocess_graph(expected_raw[0], expected_raw[1], expected_raw[2], size, mask_threshold)
    expected = tuple(expected_raw) if raw else expected_post
    got_t = [torch.from_numpy(np.asarray(out)) for out in got]
    for name, out, ref in zip(names, got_t, expected):
        if tuple(out.shape) != tuple(ref.shape):
            return {}, [f"output {name} has shape {tuple(out.shape)}, PyTorch gives {tuple(ref.shape)}"]
    differences = {name: _max_diff(out, ref) for name, out, ref in zip(names, got_t, expected)}
    failures: list[str] = []
    if raw:
        for name, ref in zip(names, expected):
            scale = max(float(ref.abs().max()) if ref.numel() else 0.0, 1.0)
            if differences[name] > tolerance.scale * scale:
                failures.append(f"{name} by {differences[name]:.3g} (over {tolerance.scale:g} x its scale {scale:.3g})")
        differences["probabilities"] = max(_max_diff(o.sigmoid(), r.sigmoid()) for o, r in zip(got_t, expected))
        got_post = postprocess_graph(got_t[0], got_t[1], got_t[2], size, mask_threshold)
    else:
        differences["probabilities"] = differences["masks"]
        got_post = (got_t[0], got_t[1], got_t[2])
    if differences["probabilities"] > tolerance.probability:
        failures.append(f"probabilities by {differences['probabilities']:.3g} (over {tolerance.probability:g})")
    failures += _compare_instances(got_post, expected_post, expected_raw[0], tolerance, mask_threshold, differences)
    return differences, failures


def _compare_instances(
    got: Sequence[torch.Tensor],
    expected: Sequence[torch.Tensor],
    pred_logits: torch.Tensor,
    tolerance: Tolerance,
    mask_threshold: float,
    differences: dict[str, float],
) -> list[str]:
    """Final scores, clear labels and thresholded masks of every query (what postprocessing keeps and draws)."""
    failures: list[str] = []
    differences["scores"] = _max_diff(got[0], expected[0])
    if differences["scores"] > tolerance.probability:
        failures.append(f"final scores by {differences['scores']:.3g} (over {tolerance.probability:g})")
    clear = _clear_labels(pred_logits, 2 * tolerance.probability)
    wrong_labels = int(((got[1] != expected[1]) & clear).sum())
    differences["labels"] = float(wrong_labels)
    if wrong_labels:
        failures.append(f"{wrong_labels} labels of queries with a clear top class")
    flipped = (got[2] > mask_threshold) != (expected[2] > mask_threshold)
    differences["mask_pixels"] = float(flipped.float().mean()) if flipped.numel() else 0.0
    if differences["mask_pixels"] > tolerance.mask_pixels:
        failures.append(f"{differences['mask_pixels']:.2%} of mask pixels (over {tolerance.mask_pixels:.2%})")
    return failures


def verify_export(
    model: nn.Module,
    backend: ExportedBackend,
    height: int | None = None,
    width: int | None = None,
    *,
    batch_size: int = 1,
    tolerance: Tolerance = EXACT_TOLERANCE,
    raise_on_mismatch: bool = False,
    seed: int = 0,
    source: str = "the exported model",
) -> dict[str, float]:
    """Run ``backend`` and the float32 PyTorch ``model`` on the same random pixel batch and compare them.

    Args:
        model: the PyTorch model the file was exported from.
        backend: the export, opened with its runtime (see :func:`~sparseinst_zoo.inference.backends.load_backend`).
        height / width: the size to test (default: the exported size; required for dynamic exports).
        batch_size: images in the test batch.
        tolerance: see :class:`Tolerance`.
        raise_on_mismatch: raise :class:`ExportMismatch` if a check is outside the tolerance.
        seed: seed of the random batch.
        source: how the message names the export.

    Returns:
        ``{output or check: difference}`` (max abs differences; ``mask_pixels`` is a fraction, ``labels`` a count).
    """
    meta = backend.metadata
    if meta.input_size is not None:
        height, width = height or meta.input_size[0], width or meta.input_size[1]
    if height is None or width is None:
        raise SparseInstError("verify: give height and width for a dynamic-size export")
    height, width = check_size(height, width, "verification size")
    example = example_input(height, width, batch_size, meta.input_dtype, seed)
    with torch.no_grad():
        expected = ExportWrapper(export_copy(model, graph=False), meta.mean, meta.std)(example)
    got = backend.run(example.numpy())
    differences, failures = compare_outputs(
        meta.output_names, expected, got, (height, width), tolerance, meta.mask_threshold
    )
    if raise_on_mismatch and failures:
        raise ExportMismatch(
            f"{source} differs from PyTorch at {height}x{width}: {'; '.join(failures)}; please report this with the "
            "model name and versions"
        )
    return differences


def verify_onnx(
    model: nn.Module,
    path: str | os.PathLike[str],
    height: int | None = None,
    width: int | None = None,
    **kwargs: object,
) -> dict[str, float]:
    """:func:`verify_export` of an ``.onnx`` file run with onnxruntime (options as there).

    Example:
        >>> verify_onnx(model, "/tmp/tiny.onnx")  # doctest: +SKIP
        {'pred_logits': 4.8e-07, 'pred_masks': 2.4e-07, 'pred_scores': 1.2e-07, 'probabilities': 6e-08, ...}
    """
    backend = OnnxRuntimeBackend.from_path(path)
    kwargs.setdefault("source", f"the ONNX file {os.fspath(path)!r}")
    return verify_export(model, backend, height, width, **kwargs)  # type: ignore[arg-type]

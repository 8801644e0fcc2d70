"""The one backend interface: a network on a normalised, padded batch -> the heads (as ``model(batch)``).

A SparseInst model is the PyTorch backend as it is (``model(batch)`` returns ``pred_logits``, ``pred_masks``,
``pred_scores`` and it carries ``pretrained_cfg`` and ``label_names``). :class:`ExportedBackend` gives an exported
file the same contract, so that :class:`~sparseinst_zoo.inference.predictor.Predictor` drives every runtime with
its own sources, batching, preprocessing, postprocessing and Results (Ultralytics' AutoBackend works the same way).
A runtime subclass only implements :meth:`ExportedBackend.run` on the pixel batch the graph takes.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import Argument, SparseInstError
from .metadata import ExportMetadata

__all__ = ["Backend", "ExportedBackend", "check_model_file"]


@runtime_checkable
class Backend(Protocol):
    """What a predictor needs from a network: ``backend(batch) -> {name: tensor}`` plus labels and test sizes."""

    pretrained_cfg: Any

    def __call__(self, batch: torch.Tensor) -> dict[str, torch.Tensor]: ...


def check_model_file(path: str | os.PathLike[str], kind: str) -> str:
    """``path`` as a string if it is a file, else a FileNotFoundError that says how to make one."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{kind} file not found: {path!r}; create one with `sparseinst export MODEL`")
    return path


class ExportedBackend(nn.Module):
    """An exported file behind the ``model(normalised batch) -> dict of heads`` interface of a SparseInst model.

    The normalised batch is turned back into pixel values (rounded to the exact uint8 levels the resize produced;
    padding becomes exactly the mean colour, which the graph normalises to 0 as PyTorch pads), padded to the fixed
    input size of the export if it has one, and handed to :meth:`run`.

    Args:
        metadata: the export's :class:`~sparseinst_zoo.inference.backends.metadata.ExportMetadata`.
        runtime: a short name of the runtime (``'onnxruntime'``, ``'openvino'``) for messages and benchmarks.
    """

    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, metadata: ExportMetadata, runtime: str) -> None:
        super().__init__()
        self.metadata = metadata
        self.runtime = runtime
        self._device_anchor = nn.Parameter(torch.zeros(0), requires_grad=False)  # Predictor reads the device from it
        self.model_name = metadata.model_name
        self.num_classes = len(metadata.label_names)
        self.pretrained_cfg = metadata.pretrained_cfg()
        self.register_buffer("mean", torch.tensor(metadata.mean, dtype=torch.float32).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor(metadata.std, dtype=torch.float32).view(1, 3, 1, 1), False)

    @property
    def label_names(self) -> tuple[str, ...]:
        return self.metadata.label_names

    @property
    def input_size(self) -> tuple[int, int] | None:
        """The fixed (H, W) input of the export, or None if it is dynamic."""
        return self.metadata.input_size

    def run(self, pixels: np.ndarray) -> Sequence[np.ndarray]:
        """Run the graph on a ``(B, 3, H, W)`` pixel batch of its input dtype; outputs in ``output_names`` order."""
        raise NotImplementedError

    def pixels(self, batch: torch.Tensor) -> np.ndarray:
        """Normalised batch -> the pixel batch the graph expects (exact levels, mean-colour padding)."""
        values = batch.float() * self.std + self.mean
        levels = values.round()
        exact = torch.where((values - levels).abs() < 1e-2, levels, values)  # undo float rounding of pixel levels
        if self.metadata.input_dtype == "uint8":
            return levels.clamp(0, 255).to(torch.uint8).numpy()
        return exact.numpy()

    def forward(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        batch = batch.detach().cpu()
        size = self.metadata.input_size
        if size is not None:
            height, width = batch.shape[-2:]
            if height > size[0] or width > size[1]:
                raise SparseInstError.naming(
                    "a {height}x{width} batch does not fit the {fixed} input of this exported model; export with a "
                    "larger size or {dynamic}",
                    height=height,
                    width=width,
                    fixed=f"{size[0]}x{size[1]}",
                    dynamic=Argument("dynamic", True),
                )
            batch = F.pad(batch, (0, size[1] - width, 0, size[0] - height))
        outputs = self.run(self.pixels(batch))
        return {name: torch.from_numpy(np.asarray(out)) for name, out in zip(self.metadata.output_names, outputs)}

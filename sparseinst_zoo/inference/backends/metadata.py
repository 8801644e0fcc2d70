"""The metadata an exported model carries (ONNX ``metadata_props``, OpenVINO ``rt_info``): written and read here.

One format for every runtime: string keys and string (often JSON) values, so that a predictor needs nothing but the
file. :func:`build_metadata` writes it at export time, :class:`ExportMetadata` parses it back.

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test")
    >>> props = build_metadata(model, 64, 96, dynamic=False, input_dtype="float32", with_postprocess=False,
    ...                        mask_threshold=0.45, half=False, opset=19)
    >>> ExportMetadata.from_props(props).input_size
    (64, 96)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..._constants import MASK_STRIDE, SIZE_DIVISIBILITY
from ..._registry import PretrainedCfg
from ...errors import SparseInstError
from ...version import __version__
from ..results import model_category_ids, model_yolo_classes, trained_labels_extra

__all__ = [
    "RAW_OUTPUTS",
    "POSTPROCESSED_OUTPUTS",
    "INPUT_NAME",
    "METADATA_VERSION",
    "InputDtype",
    "ExportMetadata",
    "build_metadata",
    "read_onnx_file_metadata",
]

RAW_OUTPUTS: tuple[str, ...] = ("pred_logits", "pred_masks", "pred_scores")
POSTPROCESSED_OUTPUTS: tuple[str, ...] = ("scores", "labels", "masks")
INPUT_NAME = "images"
METADATA_VERSION = "1"
InputDtype = Literal["float32", "uint8"]


def build_metadata(
    model: Any,
    height: int,
    width: int,
    *,
    dynamic: bool,
    input_dtype: str,
    with_postprocess: bool,
    mask_threshold: float,
    half: bool,
    opset: int,
) -> dict[str, str]:
    """The metadata of an export of ``model`` (a SparseInst model with ``pretrained_cfg``) as string pairs."""
    cfg: PretrainedCfg = model.pretrained_cfg
    label_names = list(getattr(model, "label_names", ()) or ())
    category_ids = model_category_ids(model, label_names)
    return {
        "sparseinst_zoo.metadata_version": METADATA_VERSION,
        "sparseinst_zoo.version": __version__,
        "model_name": str(getattr(model, "model_name", "sparseinst")),
        "pretrained_tag": cfg.name,
        "label_names": json.dumps(label_names),
        "category_ids": json.dumps(None if category_ids is None else list(category_ids)),
        "yolo_classes": json.dumps(model_yolo_classes(model) is not None),
        "num_classes": str(int(model.num_classes)),
        "num_masks": str(int(model.num_masks)),
        "mean": json.dumps([float(v) for v in cfg.mean]),
        "std": json.dumps([float(v) for v in cfg.std]),
        "input_name": INPUT_NAME,
        "input_dtype": input_dtype,
        "input_layout": "NCHW RGB, 0..255 pixel values, padded bottom/right to the input size",
        "input_height": "dynamic" if dynamic else str(height),
        "input_width": "dynamic" if dynamic else str(width),
        "dynamic": json.dumps(dynamic),
        "min_size": str(int(cfg.min_size)),
        "max_size": str(int(cfg.max_size)),
        "size_divisibility": str(SIZE_DIVISIBILITY),
        "mask_stride": str(MASK_STRIDE),
        "outputs": "postprocessed" if with_postprocess else "raw",
        "output_names": json.dumps(list(POSTPROCESSED_OUTPUTS if with_postprocess else RAW_OUTPUTS)),
        "mask_threshold": json.dumps(mask_threshold),
        "half": json.dumps(half),
        "opset": str(opset),
        "config": json.dumps(getattr(model, "config", {})),
    }


@dataclass(frozen=True)
class ExportMetadata:
    """What :func:`build_metadata` stored in an exported file, parsed."""

    model_name: str
    label_names: tuple[str, ...]
    category_ids: tuple[int, ...] | None  # the dataset id of each label (None: the ids are the labels)
    yolo_classes: bool  # the category ids are a data.yaml's class indices (the model was trained on one)
    mean: tuple[float, ...]
    std: tuple[float, ...]
    input_name: str
    input_dtype: InputDtype
    input_size: tuple[int, int] | None  # None: dynamic height and width
    min_size: int
    max_size: int
    size_divisibility: int
    outputs: str  # "raw" or "postprocessed"
    output_names: tuple[str, ...]
    mask_threshold: float
    half: bool
    raw: Mapping[str, str]

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: str = "the exported file") -> ExportMetadata:
        """Parse the string pairs; a file without them was not written by sparseinst-zoo."""
        if "model_name" not in props or "mean" not in props or "input_dtype" not in props:
            raise SparseInstError(
                f"{source} has no sparseinst-zoo metadata (model name, mean/std, sizes); export it with "
                "sparseinst_zoo.export.export_onnx(...) or `sparseinst export`"
            )
        try:
            dynamic = json.loads(props.get("dynamic", "false"))
            size = None if dynamic else (int(props["input_height"]), int(props["input_width"]))
            metadata = cls(
                model_name=props["model_name"],
                label_names=tuple(json.loads(props.get("label_names", "[]"))),
                category_ids=_category_ids(props),
                yolo_classes=bool(json.loads(props.get("yolo_classes", "false"))),
                mean=tuple(json.loads(props["mean"])),
                std=tuple(json.loads(props["std"])),
                input_name=props.get("input_name", INPUT_NAME),
                input_dtype=props["input_dtype"],  # type: ignore[arg-type]
                input_size=size,
                min_size=int(props.get("min_size", 640)),
                max_size=int(props.get("max_size", 853)),
                size_divisibility=int(props.get("size_divisibility", SIZE_DIVISIBILITY)),
                outputs=props.get("outputs", "raw"),
                output_names=tuple(json.loads(props.get("output_names", json.dumps(list(RAW_OUTPUTS))))),
                mask_threshold=float(json.loads(props.get("mask_threshold", "0.45"))),
                half=bool(json.loads(props.get("half", "false"))),
                raw=dict(props),
            )
        except (ValueError, TypeError, KeyError) as err:  # json and int() reject a value edited by hand or cut off
            raise SparseInstError(
                f"{source} has damaged sparseinst-zoo metadata ({type(err).__name__}: {err}); export the model again"
            ) from None
        if len(metadata.mean) != 3 or len(metadata.std) != 3:
            raise SparseInstError(f"{source} has damaged sparseinst-zoo metadata (mean/std are not 3 numbers each)")
        if metadata.category_ids is not None and len(metadata.category_ids) != len(metadata.label_names):
            raise SparseInstError(f"{source} has damaged sparseinst-zoo metadata (a category id per label name)")
        return metadata

    def pretrained_cfg(self) -> PretrainedCfg:
        """A :class:`PretrainedCfg` with the labels, normalisation and test sizes of the export."""
        mean, std = self.mean, self.std
        return PretrainedCfg(
            architecture=self.model_name,
            label_names=self.label_names,
            num_classes=len(self.label_names),
            mean=(mean[0], mean[1], mean[2]),
            std=(std[0], std[1], std[2]),
            min_size=self.min_size,
            max_size=self.max_size,
            extra={} if self.category_ids is None else trained_labels_extra({}, self.category_ids, self.yolo_classes),
        )


def _category_ids(props: Mapping[str, str]) -> tuple[int, ...] | None:
    """The stored dataset ids of the labels (files exported before they were stored: None)."""
    ids = json.loads(props.get("category_ids", "null"))
    return None if ids is None else tuple(int(i) for i in ids)


def read_onnx_file_metadata(path: str) -> ExportMetadata:
    """The metadata in the ``metadata_props`` of an ``.onnx`` file, read with the ``onnx`` package (no runtime).

    Every runtime that takes ``.onnx`` files (onnxruntime, OpenVINO) reads it the same way, so it lives here.

    Raises:
        ImportError: if ``onnx`` is not installed.
        SparseInstError: if ``path`` is not an ONNX file.
    """
    import onnx  # the optional export dependency, imported on use

    try:
        props = {p.key: p.value for p in onnx.load(path, load_external_data=False).metadata_props}
    except Exception as err:  # onnx raises DecodeError and others for non-ONNX files
        raise SparseInstError(f"{path!r} is not a readable ONNX file: {str(err).splitlines()[0]}") from err
    return ExportMetadata.from_props(props, repr(path))

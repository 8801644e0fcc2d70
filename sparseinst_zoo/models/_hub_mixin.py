"""The model facade shared by SparseInst models: ``config`` captured from the constructor, ``predict``,
``save_pretrained`` and ``push_to_hub`` (as segmentation_models.pytorch's hub mixin).

Example:
    >>> import sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test", num_classes=3)
    >>> model.config["num_classes"], model.config["backbone"]
    (3, 'test_resnet')
"""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import Any

from .. import _save
from .._registry import json_ready
from ..errors import unknown_keywords_error

__all__ = ["HubMixin", "PredictMixin"]


class PredictMixin:
    """The lazy ``predict`` / ``track`` facade of a network taking a normalised batch (the model and its optimised
    copies alike): the inference layer sits above the model family, so it is imported on use, the facade's only
    upward reference."""

    def predict(self, source: Any = None, **kwargs: Any) -> Any:
        """Predict instances on images; see :func:`sparseinst_zoo.inference.predictor.predict`."""
        from ..inference.predictor import predict

        return predict(self, source, **kwargs)  # type: ignore[arg-type]

    def track(self, source: Any = None, **kwargs: Any) -> Any:
        """Predict and track instances over video frames; see :func:`sparseinst_zoo.inference.tracking.track`."""
        from ..inference.tracking import track  # the same upward reference as predict

        return track(self, source, **kwargs)  # type: ignore[arg-type]


class HubMixin(PredictMixin):
    """Mixed into an ``nn.Module`` whose constructor arguments are all JSON-serialisable.

    ``__new__`` records the arguments the constructor is called with (defaults filled in from its signature), so the
    saved ``config.json`` is never a hand-copied list that drifts from ``__init__``.
    """

    _init_args: dict[str, Any]

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        instance = super().__new__(cls)
        signature = inspect.signature(cls.__init__)
        unknown = [name for name in kwargs if name not in signature.parameters]
        if unknown:  # named here: Python's own message names neither the model nor the arguments it takes
            known = [name for name in signature.parameters if name != "self"]
            raise unknown_keywords_error(cls.__name__, unknown, known)
        bound = signature.bind_partial(instance, *args, **kwargs)  # copy/unpickle: no args
        bound.apply_defaults()
        arguments = dict(bound.arguments)
        arguments.pop("self", None)
        object.__setattr__(instance, "_init_args", arguments)
        return instance

    def captured_config(self, **normalised: Any) -> dict[str, Any]:
        """The constructor arguments as JSON-ready values, ``normalised`` ones (e.g. coerced ints) replacing them."""
        return json_ready({**self._init_args, **normalised})

    def optimize_for_inference(self, **options: Any) -> Any:
        """An inference-only fast copy; see :func:`~sparseinst_zoo.inference.optimize.optimize_for_inference`."""
        from ..inference.optimize import optimize_for_inference  # the same upward reference as predict

        return optimize_for_inference(self, **options)  # type: ignore[arg-type]

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> Path:
        """Write config.json, model.safetensors and a model card; see :func:`sparseinst_zoo.hub.save_pretrained`."""
        return _save.save_pretrained(self, save_directory, **kwargs)  # type: ignore[arg-type]

    def push_to_hub(self, repo_id: str, **kwargs: Any) -> str:
        """Upload to the Hugging Face Hub; see :func:`sparseinst_zoo.hub.push_to_hub`."""
        return _save.push_to_hub(self, repo_id, **kwargs)  # type: ignore[arg-type]

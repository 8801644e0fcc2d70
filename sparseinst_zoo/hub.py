"""Public API for weights on disk and on the Hugging Face Hub: load, save, publish.

Re-exports the pieces users call; the work is done in :mod:`sparseinst_zoo._hub` (downloads, cache),
:mod:`sparseinst_zoo._save` (save/push), :mod:`sparseinst_zoo._factory` (from_pretrained) and
:mod:`sparseinst_zoo._checkpoint` (reading, strict loading).

Example:
    >>> import tempfile, torch, sparseinst_zoo
    >>> model = sparseinst_zoo.create_model("sparseinst_tiny_test").eval()
    >>> folder = model.save_pretrained(tempfile.mkdtemp())
    >>> again = sparseinst_zoo.from_pretrained(folder).eval()
    >>> x = torch.randn(1, 3, 64, 64)
    >>> torch.equal(model(x)["pred_masks"], again(x)["pred_masks"])
    True
"""

from __future__ import annotations

from ._checkpoint import WEIGHTS_NAME, load_state_dict_strict
from ._factory import from_pretrained
from ._hub import (
    CARD_NAME,
    CONFIG_NAME,
    cache_root,
    fetch_pretrained,
    hub_download,
    weight_sources,
)
from ._save import model_config, push_to_hub, save_pretrained

__all__ = [
    "CARD_NAME",
    "CONFIG_NAME",
    "WEIGHTS_NAME",
    "cache_root",
    "fetch_pretrained",
    "from_pretrained",
    "hub_download",
    "load_state_dict_strict",
    "model_config",
    "push_to_hub",
    "save_pretrained",
    "weight_sources",
]

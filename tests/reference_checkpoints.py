"""Reference-format checkpoints for tests: the exact keys of each released file (tests/data/checkpoint-keys), random
well-scaled values, saved as the reference saves them (``{"model": state_dict}``).

Example:
    state = synthetic_reference("sparseinst_r50_giam")
    data = reference_pth_bytes(state)
"""

from __future__ import annotations

import ast
import io
from pathlib import Path

import torch

KEYS_DIR = Path(__file__).resolve().parent / "data" / "checkpoint-keys"


def reference_keys(variant: str) -> dict[str, tuple[tuple[int, ...], str]]:
    """``{key: (shape, dtype)}`` of the released checkpoint of ``variant``."""
    keys = {}
    for line in (KEYS_DIR / f"{variant}.txt").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        keys[key] = (tuple(ast.literal_eval(shape)), dtype)
    return keys


def synthetic_reference(variant: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random, well-scaled weights in the reference key layout (activations stay O(1) through deep backbones)."""
    gen = torch.Generator().manual_seed(seed)
    state = {}
    for key, (shape, dtype) in reference_keys(variant).items():
        if dtype == "int64":
            state[key] = torch.zeros(shape, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) >= 2:
            fan_in = max(1, int(torch.tensor(shape[1:]).prod()))
            state[key] = torch.randn(shape, generator=gen) / fan_in**0.5
        elif key.endswith("weight"):
            state[key] = 1 + 0.1 * torch.randn(shape, generator=gen)
        else:
            state[key] = 0.1 * torch.randn(shape, generator=gen)
    return state


def reference_pth_bytes(state: dict[str, torch.Tensor]) -> bytes:
    """The bytes of a detectron2-style release file holding ``state``."""
    buffer = io.BytesIO()
    torch.save({"model": state, "__author__": "synthetic"}, buffer)
    return buffer.getvalue()

"""Weight initialisers shared by the network's parts (detectron2's ``c2_xavier_fill`` / ``c2_msra_fill``).

The encoder and the decoder both use them; they live here so that neither part imports the other.
"""

from __future__ import annotations

from torch import nn

__all__ = ["init_bias", "init_msra_fill", "init_xavier_fill"]


def init_bias(module: nn.Conv2d | nn.Linear, value: float = 0.0) -> None:
    """Set every bias entry of ``module`` to ``value`` (nothing to do for a layer built with ``bias=False``)."""
    if module.bias is not None:
        nn.init.constant_(module.bias, value)


def init_xavier_fill(module: nn.Conv2d | nn.Linear) -> None:
    """detectron2's ``c2_xavier_fill``: kaiming_uniform(a=1), zero bias.

    Example:
        >>> layer = nn.Linear(4, 2)
        >>> init_xavier_fill(layer)
        >>> layer.bias.abs().sum().item()
        0.0
    """
    nn.init.kaiming_uniform_(module.weight, a=1)
    init_bias(module)


def init_msra_fill(module: nn.Conv2d | nn.Linear) -> None:
    """detectron2's ``c2_msra_fill``: kaiming_normal(fan_out, relu), zero bias."""
    nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    init_bias(module)

"""SparseInst model family: building blocks and the registered variants."""

from .backbones import DeformableBottleneck, create_backbone
from .decoder import SparseInstDecoder
from .encoder import InstanceContextEncoder
from .sparseinst import SparseInst

__all__ = ["DeformableBottleneck", "InstanceContextEncoder", "SparseInst", "SparseInstDecoder", "create_backbone"]

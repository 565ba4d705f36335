"""Backbones."""

from metalearn_lib.models.conv4 import Conv4, conv_block

__all__ = ["Conv4", "conv_block"]

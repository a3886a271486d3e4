"""Keras layers of tflic: Swin transformer blocks and resampling layers."""

from tflic.layers.cross_attention_block import CrossAttentionBlock
from tflic.layers.gelu_dense import GeluDense
from tflic.layers.layer_norm import LayerNorm
from tflic.layers.patch_merging import PatchMerging
from tflic.layers.patch_split import PatchSplit
from tflic.layers.stack import Stack
from tflic.layers.swin_block import SwinBlock
from tflic.layers.window_attention import WindowAttention

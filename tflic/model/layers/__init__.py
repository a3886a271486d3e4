"""Keras layers of tflic: Swin transformer blocks and resampling layers."""

from tflic.model.layers.cross_attention_block import CrossAttentionBlock
from tflic.model.layers.gelu_dense import GeluDense
from tflic.model.layers.layer_norm import LayerNorm
from tflic.model.layers.patch_merging import PatchMerging
from tflic.model.layers.patch_split import PatchSplit
from tflic.model.layers.stack import Stack
from tflic.model.layers.swin_block import SwinBlock
from tflic.model.layers.window_attention import WindowAttention

"""MobileViTv2 in an exact faster form: the same function as timm's blocks without unfolding the feature map into
patches, with each GroupNorm's affine and each block's output projection folded into the 1x1 convolutions after them
(tests/test_deploy.py compares it with timm's model). Eager scoring runs it, and src.export exports it."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import ConvNormAct
from timm.models.byobnet import BottleneckBlock, ByobNet
from timm.models.mobilevit import LinearSelfAttention, MobileVitV2Block
from torch import nn


class Standardize(nn.Module):
    """GroupNorm with one group and no affine, written as ONNX's InstanceNormalization over [N, 1, C*H*W]: no Shape
    op and no multiply by ones, each of which costs a dequantised copy of the map in the int8 graph."""

    def __init__(self, eps: float):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        _, C, H, W = x.shape
        return F.instance_norm(x.reshape(-1, 1, C * H * W), eps=self.eps).reshape(-1, C, H, W)


@torch.no_grad()
def _fold_affine(norm: nn.GroupNorm, conv: nn.Conv2d) -> nn.Conv2d:
    """A 1x1 convolution equal to `conv(norm's affine(x))`: conv(w * x + b) = (W diag(w)) x + (W b + bias)."""
    if conv.kernel_size != (1, 1) or conv.groups != 1:
        raise ValueError(f"only a dense 1x1 convolution takes a norm's affine exactly, not {conv}")
    weight, fused = conv.weight[:, :, 0, 0], nn.Conv2d(conv.in_channels, conv.out_channels, 1, stride=conv.stride)
    fused.weight.copy_(weight[:, :, None, None] * (1 if norm.weight is None else norm.weight[:, None, None]))
    fused.bias.copy_((0 if norm.bias is None else weight @ norm.bias) + (0 if conv.bias is None else conv.bias))
    return fused


class FastLinearSelfAttention(nn.Module):
    """timm's `LinearSelfAttention` on the [B, C, H, W] feature map, without unfolding it into [B, C, P, N] patches.

    Patch position p of token n is pixel (h, w) with p = (h % ph, w % pw), so the softmax over tokens for each
    position is a softmax over a strided sub-grid, and the context vector (one per position) is tiled back over the
    map. The key projection is applied after the softmax-weighted sum over tokens (the weights add up to 1), to
    ph * pw vectors instead of every pixel. The affine of the `norm` before it is folded into the projections (the
    input is standardised only), which is exact for the key too, as the weights add up to 1. Same outputs in eval mode.
    """

    def __init__(self, attn: LinearSelfAttention, patch_size: tuple[int, int], norm: nn.GroupNorm):
        super().__init__()
        d = attn.embed_dim
        qkv = _fold_affine(norm, attn.qkv_proj)
        self.patch_size = patch_size
        self.query, self.key, self.value = (nn.Conv2d(d, n, 1) for n in (1, d, d))
        for conv, rows in ((self.query, slice(0, 1)), (self.key, slice(1, 1 + d)), (self.value, slice(1 + d, None))):
            conv.weight.data.copy_(qkv.weight[rows])
            conv.bias.data.copy_(qkv.bias[rows])
        self.out_proj = attn.out_proj

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        ph, pw = self.patch_size
        nh, nw = H // ph, W // pw
        q = self.query(x).reshape(B, nh, ph, nw, pw).permute(0, 2, 4, 1, 3).reshape(B, ph * pw, nh * nw)
        scores = q.softmax(-1).reshape(B, ph, pw, nh, nw).permute(0, 3, 1, 4, 2).reshape(B, 1, H, W)
        pooled = (x * scores).reshape(B, C, nh, ph, nw, pw).sum((2, 4))  # [B, C, ph, pw]
        context = self.key(pooled).repeat(1, 1, nh, nw)  # [B, d, H, W]: position (h, w) gets (h % ph, w % pw)
        return self.out_proj(F.relu(self.value(x)) * context)


class FastMobileVitV2Block(nn.Module):
    """timm's `MobileVitV2Block` with `FastLinearSelfAttention`, and each GroupNorm's affine folded into the 1x1
    convolutions that read it: same outputs in eval mode."""

    def __init__(self, block: MobileVitV2Block):
        super().__init__()
        self.patch_size = block.patch_size
        self.conv_kxk, self.conv_1x1, self.transformer = block.conv_kxk, block.conv_1x1, block.transformer
        self.conv_proj = block.conv_proj
        self.conv_proj.conv = _fold_affine(block.norm, block.conv_proj.conv)
        self.norm = Standardize(block.norm.eps)
        for layer in self.transformer:
            layer.attn = FastLinearSelfAttention(layer.attn, self.patch_size, layer.norm1)
            layer.mlp.fc1 = _fold_affine(layer.norm2, layer.mlp.fc1)
            layer.norm1, layer.norm2 = Standardize(layer.norm1.eps), Standardize(layer.norm2.eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        ph, pw = self.patch_size
        new_h, new_w = math.ceil(H / ph) * ph, math.ceil(W / pw) * pw
        if new_h != H or new_w != W:
            x = F.interpolate(x, size=(new_h, new_w), mode="bilinear", align_corners=True)
        x = self.conv_1x1(self.conv_kxk(x))
        for layer in self.transformer:  # LinearTransformerBlock in eval mode (drop path and dropout are identities)
            x = x + layer.attn(layer.norm1(x))
            x = x + layer.mlp(layer.norm2(x))
        return self.conv_proj(self.norm(x))


def _fold_projection(block: FastMobileVitV2Block, nxt: nn.Module) -> None:
    """Fold `block`'s output projection (1x1 conv + BN, no activation) into `nxt`'s first 1x1 conv when `nxt` is a
    bottleneck without a residual, so that nothing else reads the projection (call under no_grad)."""
    proj = block.conv_proj
    if not (isinstance(nxt, BottleneckBlock) and nxt.shortcut is None and isinstance(proj, ConvNormAct)
            and isinstance(proj.bn.act, nn.Identity) and isinstance(proj.bn.drop, nn.Identity)):
        return
    first, second, bn = proj.conv, nxt.conv1_1x1.conv, proj.bn
    if any(c.kernel_size != (1, 1) or c.stride != (1, 1) or c.groups != 1 for c in (first, second)):
        return
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    shift = bn.bias - bn.running_mean * scale + (scale * first.bias if first.bias is not None else 0)
    w2 = second.weight[:, :, 0, 0]
    fused = nn.Conv2d(first.in_channels, second.out_channels, 1)
    fused.weight.copy_((w2 @ (scale[:, None] * first.weight[:, :, 0, 0]))[:, :, None, None])
    fused.bias.copy_(w2 @ shift + (second.bias if second.bias is not None else 0))
    nxt.conv1_1x1.conv, block.conv_proj = fused, nn.Identity()


@torch.no_grad()
def fast_mobilevitv2(model: nn.Module) -> nn.Module:
    """`model` in eval mode with every `MobileVitV2Block` replaced in place by `FastMobileVitV2Block`.

    Each block's output projection is then folded into the next stage's first 1x1 convolution where nothing else
    reads it: one 1x1 convolution instead of two (9% fewer multiply-adds in mobilevitv2_200). Other models: as is.
    """
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, MobileVitV2Block):
                setattr(parent, name, FastMobileVitV2Block(child))
    for net in [m for m in model.modules() if isinstance(m, ByobNet)]:
        blocks = [block for stage in net.stages for block in stage]
        for block, nxt in zip(blocks, blocks[1:]):
            if isinstance(block, FastMobileVitV2Block):
                _fold_projection(block, nxt)
    return model.eval()

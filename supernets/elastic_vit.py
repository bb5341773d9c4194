"""A small elastic vision transformer supernet (AutoFormer-style weight entanglement).

The supernet holds every block at its largest size: ``max(embed_dims)`` wide,
``max(heads)`` attention heads of a fixed ``head_dim``, and an MLP of
``max(embed_dims) * max(mlp_ratios)`` hidden units. A sub-network runs the first
``depth`` blocks on the first ``embed_dim`` channels of the token embedding; block
``b`` uses its first ``heads{b}`` heads and ``embed_dim * mlp{b}`` hidden MLP units, and
every LayerNorm normalises over the active channels only. :meth:`ElasticViT.extract`
builds the same network from timm's ``PatchEmbed``, ``Attention`` and ``Mlp`` and
plain ``nn.LayerNorm``/``nn.Linear`` of exactly those sizes, with copied weights.

Configs are flat dicts ``{"depth", "embed_dim", "heads0".., "mlp0"..}``.
"""

from __future__ import annotations

import re
from typing import Dict, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from timm.layers import Mlp, PatchEmbed, trunc_normal_
from timm.models.vision_transformer import Attention
from torch import nn

from hwnas.errors import HwnasError
from hwnas.space import Choice, SearchSpace

from .base import Config, Supernet
from .elastic_resnet import copy_prefix_weights

LN_EPS = 1e-6  # timm's ViT LayerNorm epsilon


class ViTBlock(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, num_heads: int, head_dim: int, mlp_hidden: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=LN_EPS)
        self.attn = Attention(dim, num_heads, attn_head_dim=head_dim, qkv_bias=True)
        self.norm2 = nn.LayerNorm(dim, eps=LN_EPS)
        self.mlp = Mlp(dim, mlp_hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


def _sliced_layer_norm(norm: nn.LayerNorm, x: torch.Tensor) -> torch.Tensor:
    dim = x.shape[-1]
    return F.layer_norm(x, (dim,), norm.weight[:dim], norm.bias[:dim], norm.eps)


class ElasticViTBlock(nn.Module):
    """One block slot: a max-size :class:`ViTBlock` run with sliced width, heads and MLP."""

    def __init__(self, max_dim: int, max_heads: int, head_dim: int, max_hidden: int):
        super().__init__()
        self.head_dim = head_dim
        self.block = ViTBlock(max_dim, max_heads, head_dim, max_hidden)

    def qkv(self, num_heads: int, dim: int) -> Tuple[torch.Tensor, torch.Tensor]:
        """Weight and bias of the sub-block's fused qkv projection.

        timm lays the rows out as [q heads | k heads | v heads], so the first
        ``num_heads`` heads are a prefix of each of the three parts, not of the whole.
        """
        qkv, inner = self.block.attn.qkv, num_heads * self.head_dim
        weight = qkv.weight.view(3, -1, qkv.in_features)[:, :inner, :dim].reshape(3 * inner, dim)
        return weight, qkv.bias.view(3, -1)[:, :inner].reshape(3 * inner)

    def attention(self, x: torch.Tensor, num_heads: int) -> torch.Tensor:
        batch, tokens, dim = x.shape
        weight, bias = self.qkv(num_heads, dim)
        q, k, v = F.linear(x, weight, bias).reshape(batch, tokens, 3, num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        x = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(batch, tokens, num_heads * self.head_dim)
        proj = self.block.attn.proj
        return F.linear(x, proj.weight[:dim, :x.shape[-1]], proj.bias[:dim])

    def mlp(self, x: torch.Tensor, hidden: int) -> torch.Tensor:
        mlp, dim = self.block.mlp, x.shape[-1]
        x = mlp.act(F.linear(x, mlp.fc1.weight[:hidden, :dim], mlp.fc1.bias[:hidden]))
        return F.linear(x, mlp.fc2.weight[:dim, :hidden], mlp.fc2.bias[:dim])

    def forward(self, x: torch.Tensor, num_heads: int, mlp_ratio: int) -> torch.Tensor:
        x = x + self.attention(_sliced_layer_norm(self.block.norm1, x), num_heads)
        return x + self.mlp(_sliced_layer_norm(self.block.norm2, x), x.shape[-1] * mlp_ratio)

    @torch.no_grad()
    def extract(self, dim: int, num_heads: int, mlp_ratio: int) -> ViTBlock:
        sub = ViTBlock(dim, num_heads, self.head_dim, dim * mlp_ratio)
        weight, bias = self.qkv(num_heads, dim)
        return copy_prefix_weights(sub, self.block, {"attn.qkv.weight": weight, "attn.qkv.bias": bias})


class ViTSubnet(nn.Module):
    """A standalone sub-network: patch embedding, (class token), position embedding, blocks, norm, head."""

    def __init__(self, patch_embed: PatchEmbed, cls_token: Optional[torch.Tensor], pos_embed: torch.Tensor,
                 blocks: List[nn.Module], norm: nn.LayerNorm, head: nn.Linear):
        super().__init__()
        self.patch_embed = patch_embed
        self.cls_token = nn.Parameter(cls_token) if cls_token is not None else None
        self.pos_embed = nn.Parameter(pos_embed)
        self.blocks, self.norm, self.head = nn.Sequential(*blocks), norm, head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(len(x), -1, -1), x], dim=1)
        x = self.norm(self.blocks(x + self.pos_embed))
        return self.head(x[:, 0] if self.cls_token is not None else x.mean(1))


class ElasticViT(Supernet):
    """Elastic depth, embedding dim, and per-block heads and MLP ratio.

    The image (``img_size`` square, ``in_chans`` channels) is cut into
    ``patch_size``-square patches by a strided convolution. ``pool="token"`` classifies
    the class token, ``pool="mean"`` the mean of the patch tokens. Depth options run
    from ``min_depth`` to ``max_depth``.
    """

    registry_name = "elastic_vit"
    elastic_patterns = {"depth": r"depth", "mlp_ratio": r"mlp\d+", "heads": r"heads\d+", "embed_dim": r"embed_dim"}

    def __init__(self, num_classes: int = 10, in_chans: int = 1, img_size: int = 28, patch_size: int = 4,
                 embed_dims: Sequence[int] = (64, 96, 128), heads: Sequence[int] = (2, 3, 4), head_dim: int = 32,
                 mlp_ratios: Sequence[int] = (2, 3, 4), min_depth: int = 4, max_depth: int = 6,
                 pool: str = "token"):
        if pool not in ("token", "mean"):
            raise HwnasError(f"unknown pool {pool!r}; allowed: token, mean")
        if img_size % patch_size:
            raise HwnasError(f"img_size {img_size} is not a multiple of patch_size {patch_size}")
        if not 1 <= min_depth <= max_depth:
            raise HwnasError(f"need 1 <= min_depth <= max_depth, got {min_depth}, {max_depth}")
        if any(not isinstance(r, int) or r < 1 for r in mlp_ratios):
            raise HwnasError(f"mlp_ratios must be positive integers, got {list(mlp_ratios)}")
        super().__init__(num_classes=num_classes, in_chans=in_chans, img_size=img_size, patch_size=patch_size,
                         embed_dims=tuple(sorted(set(embed_dims))), heads=tuple(sorted(set(heads))),
                         head_dim=head_dim, mlp_ratios=tuple(sorted(set(mlp_ratios))), min_depth=min_depth,
                         max_depth=max_depth, pool=pool)
        kw = self.init_kwargs
        max_dim = kw["embed_dims"][-1]
        self.patch_embed = PatchEmbed(img_size, patch_size, in_chans, max_dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, max_dim)) if pool == "token" else None
        tokens = self.patch_embed.num_patches + (pool == "token")
        self.pos_embed = nn.Parameter(trunc_normal_(torch.empty(1, tokens, max_dim), std=0.02))
        self.blocks = nn.ModuleList(
            ElasticViTBlock(max_dim, kw["heads"][-1], head_dim, max_dim * kw["mlp_ratios"][-1])
            for _ in range(max_depth))
        self.norm = nn.LayerNorm(max_dim, eps=LN_EPS)
        self.head = nn.Linear(max_dim, num_classes)
        self.apply(_init_linear)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)  # timm's ViT init
        self._space = SearchSpace(
            [Choice("depth", tuple(range(min_depth, max_depth + 1))), Choice("embed_dim", kw["embed_dims"])]
            + [Choice(f"heads{b}", kw["heads"]) for b in range(max_depth)]
            + [Choice(f"mlp{b}", kw["mlp_ratios"]) for b in range(max_depth)],
            name=self.registry_name,
        )
        self.active = self.largest_config()

    def active_blocks(self, config: Config) -> List[Tuple[int, int, int]]:
        """(slot, heads, mlp ratio) of the blocks ``config`` runs, in order."""
        return [(b, config[f"heads{b}"], config[f"mlp{b}"]) for b in range(config["depth"])]

    def embed(self, x: torch.Tensor, dim: int) -> torch.Tensor:
        """Patch tokens (after the class token) plus position embedding, on the first ``dim`` channels."""
        if tuple(x.shape[-2:]) != tuple(self.patch_embed.img_size):
            raise HwnasError(f"{self.registry_name} takes {tuple(self.patch_embed.img_size)} images, "
                             f"got {tuple(x.shape[-2:])}")
        proj = self.patch_embed.proj
        x = F.conv2d(x, proj.weight[:dim], proj.bias[:dim], proj.stride).flatten(2).transpose(1, 2)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token[..., :dim].expand(len(x), -1, -1), x], dim=1)
        return x + self.pos_embed[..., :dim]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dim = self.active["embed_dim"]
        x = self.embed(x, dim)
        for b, num_heads, mlp_ratio in self.active_blocks(self.active):
            x = self.blocks[b](x, num_heads, mlp_ratio)
        x = _sliced_layer_norm(self.norm, x)
        x = x[:, 0] if self.cls_token is not None else x.mean(1)
        return F.linear(x, self.head.weight[:, :dim], self.head.bias)

    @torch.no_grad()
    def extract(self, config: Config) -> ViTSubnet:
        config = self.check_config(config)
        kw, dim = self.init_kwargs, config["embed_dim"]
        patch_embed = PatchEmbed(kw["img_size"], kw["patch_size"], kw["in_chans"], dim)
        blocks = [self.blocks[b].extract(dim, num_heads, mlp_ratio)
                  for b, num_heads, mlp_ratio in self.active_blocks(config)]
        sub = ViTSubnet(copy_prefix_weights(patch_embed, self.patch_embed),
                        None if self.cls_token is None else self.cls_token[..., :dim].clone(),
                        self.pos_embed[..., :dim].clone(), blocks,
                        copy_prefix_weights(nn.LayerNorm(dim, eps=LN_EPS), self.norm),
                        copy_prefix_weights(nn.Linear(dim, kw["num_classes"]), self.head))
        return sub.eval()


def _init_linear(module: nn.Module) -> None:
    """timm's ViT initialisation of linear layers."""
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)

"""The paper's model families, scaled to a CPU by default and to paper size by arguments.

* ``ResNetCifar(depth)`` — He et al.'s CIFAR ResNet (depth = 6n + 2; ResNet-110 is depth 110).
* ``AlexNetSmall`` — AlexNet's five convolutions and three fully connected layers, for 32x32.
* ``Generator`` / ``Critic`` — a DCGAN-style WGAN pair (upsample + conv in the generator, so every
  layer is a convertible Conv2d).
* ``TinyTransformerLM`` — a causal character transformer whose attention matmuls are ``Matmul``
  sites, so attention and the softmax's output are flex too.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex.matmul import Matmul

__all__ = [
    "AlexNetSmall",
    "Critic",
    "DigitFeatureNet",
    "Generator",
    "ResNetCifar",
    "TinyTransformerLM",
]


class _BasicBlock(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(
                nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """CIFAR-style ResNet: 3 stages of n basic blocks (widths w, 2w, 4w), depth = 6n + 2."""

    def __init__(self, depth: int = 8, width: int = 16, num_classes: int = 10) -> None:
        super().__init__()
        if depth < 8 or (depth - 2) % 6:
            raise ValueError(
                f"ResNet depth must be 6n + 2 with n >= 1 (8, 14, 20, …, 110), got {depth}"
            )
        n = (depth - 2) // 6
        self.stem = nn.Sequential(
            nn.Conv2d(3, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
        )
        blocks: list[nn.Module] = []
        c_in = width
        for stage, c_out in enumerate((width, 2 * width, 4 * width)):
            for i in range(n):
                blocks.append(_BasicBlock(c_in, c_out, 2 if stage > 0 and i == 0 else 1))
                c_in = c_out
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(c_in, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, H, W) -> (B, classes)
        h = self.blocks(self.stem(x))
        return self.head(h.mean(dim=(2, 3)))


class AlexNetSmall(nn.Module):
    """AlexNet's layer pattern (5 conv, 3 fc, ReLU, max-pool, dropout) for 32x32 inputs."""

    def __init__(self, num_classes: int = 10, width: int = 48, dropout: float = 0.5) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(3, w, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),  # 16x16
            nn.Conv2d(w, 2 * w, 5, 1, 2), nn.ReLU(), nn.MaxPool2d(2),  # 8x8
            nn.Conv2d(2 * w, 3 * w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(3 * w, 3 * w, 3, 1, 1), nn.ReLU(),
            nn.Conv2d(3 * w, 2 * w, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
        )  # fmt: skip
        self.classifier = nn.Sequential(
            nn.Dropout(dropout), nn.Linear(2 * w * 16, 8 * w), nn.ReLU(),
            nn.Dropout(dropout), nn.Linear(8 * w, 4 * w), nn.ReLU(),
            nn.Linear(4 * w, num_classes),
        )  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class Generator(nn.Module):
    """z (B, z_dim) -> image (B, 1, 16, 16) in [-1, 1]."""

    def __init__(self, z_dim: int = 32, width: int = 64) -> None:
        super().__init__()
        self.width = width
        self.fc = nn.Linear(z_dim, 2 * width * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width), nn.ReLU(), nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, 1, 1), nn.BatchNorm2d(width), nn.ReLU(),
            nn.Upsample(scale_factor=2), nn.Conv2d(width, 1, 3, 1, 1), nn.Tanh(),
        )  # fmt: skip

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(z).view(-1, 2 * self.width, 4, 4))


class Critic(nn.Module):
    """image (B, 1, 16, 16) -> score (B,); no normalisation (weight clipping, as in WGAN)."""

    def __init__(self, width: int = 64) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, width, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1), nn.LeakyReLU(0.2),
        )  # fmt: skip
        self.fc = nn.Linear(2 * width * 4 * 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x).flatten(1)).squeeze(-1)


class DigitFeatureNet(nn.Module):
    """The fixed float32 digit classifier whose features the Fréchet distance compares."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1, 32, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, 1, 1), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(),
            nn.Linear(64 * 16, 64), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # (B, 64)
        return self.net(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class _Attention(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.proj = nn.Linear(dim, dim, bias=False)
        self.qk = Matmul()
        self.av = Matmul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        scores = self.qk(q, k.transpose(-1, -2)) / math.sqrt(c // self.heads)  # (B, H, T, T)
        mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
        probs = scores.masked_fill(mask, float("-inf")).softmax(-1)
        out = self.av(probs, v)  # (B, H, T, hd)
        return self.proj(out.transpose(1, 2).reshape(b, t, c))


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = _Attention(dim, heads)
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class TinyTransformerLM(nn.Module):
    """A causal character-level transformer: tokens (B, T) -> logits (B, T, vocab)."""

    def __init__(
        self, vocab: int, dim: int = 64, layers: int = 2, heads: int = 4, context: int = 64
    ) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim ({dim}) must be divisible by heads ({heads})")
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(context, dim)
        self.blocks = nn.Sequential(*[_Block(dim, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        return self.head(self.ln(self.blocks(h)))

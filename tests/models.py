"""Small model families used across the tests (random init, deterministic)."""

from __future__ import annotations

import torch
from torch import nn


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(32, 64)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(64, 48)
        self.head = nn.Linear(48, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.act(self.fc2(self.act(self.fc1(x)))))


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))


class SmallCNN(nn.Module):
    """Conv + BatchNorm stem, one residual block, a Linear head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.block = ResBlock(16)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 32)
        self.head = nn.Linear(32, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool(self.block(self.stem(x))).flatten(1)
        return self.head(torch.relu(self.fc(x)))


class Attention(nn.Module):
    """Multi-head self-attention written with plain Linears (as BERT / MiniLM are)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.query, self.key, self.value = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, t, d = x.shape
        split = lambda y: y.view(b, t, self.heads, d // self.heads).transpose(1, 2)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        attn = torch.softmax(q @ k.transpose(-1, -2) / (d // self.heads) ** 0.5, dim=-1)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, d))


class TinyTransformer(nn.Module):
    """Embedding + one pre-norm transformer block (attention + MLP, residuals, LayerNorm) + a head."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.norm1, self.norm2 = nn.LayerNorm(32), nn.LayerNorm(32)
        self.attn = Attention(32, 4)
        self.mlp = nn.Sequential(nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.embed(tokens)
        x = x + self.attn(self.norm1(x))
        x = x + self.mlp(self.norm2(x))
        return self.head(x.mean(dim=1))


class TorchEncoder(nn.Module):
    """Embedding + torch's own nn.TransformerEncoderLayer (its fast path reads child weights)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(50, 32)
        self.encoder = nn.TransformerEncoderLayer(d_model=32, nhead=4, dim_feedforward=64, dropout=0.0,
                                                  batch_first=True)
        self.head = nn.Linear(32, 5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.head(self.encoder(self.embed(tokens)).mean(dim=1))


def make(family: str, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    """A fresh model of ``family`` and an example input batch, both deterministic for ``seed``."""
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed + 1)
    if family == "mlp":
        model, x = MLP(), torch.randn(8, 32, generator=gen)
    elif family == "cnn":
        model, x = SmallCNN(), torch.randn(4, 3, 12, 12, generator=gen)
    elif family == "transformer":
        model, x = TinyTransformer(), torch.randint(0, 50, (4, 7), generator=gen)
    elif family == "torch_encoder":
        model, x = TorchEncoder(), torch.randint(0, 50, (4, 7), generator=gen)
    else:
        raise ValueError(family)
    model.eval()
    return model, x


FAMILIES = ("mlp", "cnn", "transformer")

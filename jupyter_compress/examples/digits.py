"""The quickstart's digits CNN, trained on scikit-learn's bundled digits (no download)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

__all__ = ["DigitsCNN", "digits_data", "evaluate", "fine_tune", "train_digits_cnn"]


class DigitsCNN(nn.Module):
    """Two Conv2d + BatchNorm blocks and a Linear head; input (N, 1, 8, 8), 10 classes."""

    def __init__(self, width: int = 16):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width)
        self.head = nn.Linear(2 * width * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.head(x.flatten(1))


def digits_data(seed: int = 0, test_size: float = 0.25):
    """``(X_train, X_test, y_train, y_test)``: images scaled to [0, 1], shape (N, 1, 8, 8); stratified split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    return train_test_split(X, y, test_size=test_size, random_state=seed, stratify=y)


def fine_tune(model: nn.Module, X: torch.Tensor, y: torch.Tensor, *, epochs: int = 1, lr: float = 1e-3,
              seed: int = 0, batch_size: int = 64) -> nn.Module:
    """A few epochs of Adam on cross-entropy, in place; returns ``model`` in eval mode."""
    gen = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    with torch.enable_grad():
        for _ in range(epochs):
            model.train()
            for batch in torch.randperm(len(X), generator=gen).split(batch_size):
                loss = nn.functional.cross_entropy(model(X[batch]), y[batch])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
    return model.eval()


def train_digits_cnn(epochs: int = 20, seed: int = 0, width: int = 16):
    """Train a :class:`DigitsCNN` (about 2 s on 2 cores); return ``(model, X_test, y_test)``.

    The same seed gives the same split, initialisation and weights.
    """
    torch.manual_seed(seed)
    X_train, X_test, y_train, y_test = digits_data(seed)
    model = DigitsCNN(width)
    fine_tune(model, X_train, y_train, epochs=epochs, lr=1e-2, seed=seed)
    return model, X_test, y_test


def evaluate(X: torch.Tensor, y: torch.Tensor) -> Callable[[nn.Module], dict]:
    """An ``eval`` callable for :func:`jupyter_compress.compress`: ``{"accuracy": ...}`` on ``(X, y)``."""
    from ..core.metrics import accuracy

    return lambda model: {"accuracy": accuracy(model, X, y)}

"""The quickstart's digits CNN compressed by SVD 0.5 + prune 0.5: parameter ratio and accuracy change."""

from __future__ import annotations

import torch
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from torch import nn

from jupyter_compress import Plan, PruneConfig, SVDConfig, accuracy, compress


class DigitsCNN(nn.Module):
    """Two Conv2d + BatchNorm, a Linear head; input (N, 1, 8, 8)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2, self.bn2 = nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32)
        self.head = nn.Linear(32 * 4 * 4, 10)

    def forward(self, x):
        x = torch.relu(self.bn1(self.conv1(x)))
        x = torch.max_pool2d(torch.relu(self.bn2(self.conv2(x))), 2)
        return self.head(x.flatten(1))


def train_digits_cnn(epochs: int = 20, seed: int = 0) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """Train on scikit-learn's bundled digits (no download; ~2 s on 2 cores); return (model, X_test, y_test)."""
    torch.manual_seed(seed)
    digits = load_digits()
    X = torch.tensor(digits.images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(digits.target)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    model = DigitsCNN()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(epochs):
        model.train()
        for batch in torch.randperm(len(X_train)).split(64):
            loss = nn.functional.cross_entropy(model(X_train[batch]), y_train[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return model.eval(), X_test, y_test


PLANS = {
    "SVD 0.5 + prune 0.5": Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)),
    "SVD 0.5 only": Plan.of(SVDConfig(rank=0.5)),
    "prune 0.5 only": Plan.of(PruneConfig(amount=0.5)),
}


def rows(quick: bool) -> list[dict]:
    model, X_test, y_test = train_digits_cnn()
    out = []
    for label, plan in PLANS.items():
        _, report = compress(model, plan, eval=lambda m: {"accuracy": accuracy(m, X_test, y_test)})
        before, after = report.metrics_before["accuracy"], report.metrics_after["accuracy"]
        params = report.model_params_before / report.model_params_after
        name = f"digits CNN, {label}"
        if label == next(iter(PLANS)):
            out.append({"name": name, "figure": "params ratio", "baseline": f"{report.model_params_before:,}",
                        "value": f"{params:.2f}x", "note": f"{report.model_params_after:,} after"})
        out.append({"name": name, "figure": "accuracy change", "baseline": f"{before:.3f}",
                    "value": f"{after - before:+.3f}", "note": f"{after:.3f} after; params ratio {params:.2f}x"})
    return out

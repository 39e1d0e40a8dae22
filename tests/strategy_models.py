"""Shared fixtures data for the strategy tests: a small trained digits CNN (cached per process)."""

from __future__ import annotations

import functools

import torch


@functools.lru_cache(maxsize=1)
def digits():
    """(model, X_test, y_test) of a DigitsCNN trained 3 epochs (about a second)."""
    from jupyter_compress.examples.digits import train_digits_cnn

    torch.manual_seed(0)
    return train_digits_cnn(epochs=3)


def accuracy_eval(X, y):
    from jupyter_compress.examples.digits import evaluate

    return evaluate(X, y)

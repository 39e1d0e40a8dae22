"""Factories, data and eval functions the CLI tests name as package.module:attr (tests/ is on PYTHONPATH)."""

from __future__ import annotations

import torch
from models import make

from jupyter_compress.examples.digits import DigitsCNN, digits_data


def cnn():
    return make("cnn")[0]


def cnn_example():
    return make("cnn")[1]


def cnn_data():
    x = make("cnn")[1]
    return x, torch.arange(len(x)) % 10


def digits():
    return DigitsCNN()


def digits_example():
    return digits_data(0)[1][:8]


def digits_eval(model):
    _, X_test, _, y_test = digits_data(0)
    from jupyter_compress import accuracy

    return {"accuracy": accuracy(model, X_test, y_test)}


def minilm():
    from jupyter_compress.examples.minilm import load_minilm

    return load_minilm()


def minilm_example():
    from jupyter_compress.examples.minilm import corpus, features

    model = minilm()
    return (features(model, corpus(4)),)

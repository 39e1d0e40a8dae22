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


# --- tiny factories for the exit-code tests (fast: no training, no downloads) -----------------------------
def tiny():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))


def tiny_example():
    return torch.randn(4, 8, generator=torch.Generator().manual_seed(0))


def tiny_data():
    x = tiny_example()
    return x, torch.arange(len(x)) % 4


def tiny_eval(model):
    """The share of the example rows whose prediction did not change from the tiny model's (1.0 before)."""
    x = tiny_example()
    with torch.no_grad():
        return {"accuracy": float((model(x).argmax(1) == tiny()(x).argmax(1)).float().mean())}


def nan_eval(model):
    return float("nan")


def nan_dict_eval(model):
    return {"accuracy": float("nan"), "loss": 0.5}


_calls = {"n": 0}


def nan_after_eval(model):
    """A number for the first call (the model before compression), NaN after."""
    _calls["n"] += 1
    return 1.0 if _calls["n"] % 2 == 1 else float("nan")


def raising_factory():
    raise ValueError("no checkpoint at /models/tiny.pt")


def raising_eval(model):
    raise RuntimeError("the eval set is missing")


def exiting_eval(model):
    raise SystemExit(0)


def not_a_model():
    return 42


def tiny_train(model):
    """A training function for QAT steps: a few SGD steps on the tiny data."""
    x, y = tiny_data()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.01)
    for _ in range(2):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()


def raising_train(model):
    raise ValueError("the training data is gone")


NOT_CALLABLE = 3


def transformer():  # an Embedding, attention, an MLP: for methods a CNN has no layer for (embedding tables)
    return make("transformer")[0]


def transformer_example():
    return make("transformer")[1]


def transformer_data():
    x = make("transformer")[1]
    return x, torch.arange(len(x)) % 2


def family_for(method: str) -> str:
    """'cnn' when ``method`` handles a layer of the CNN, else 'transformer'."""
    from jupyter_compress.core.registry import get_method

    supported = get_method(method).supported
    return "cnn" if any(isinstance(m, supported) for m in cnn().modules()) else "transformer"

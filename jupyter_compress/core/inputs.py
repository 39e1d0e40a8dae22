"""Model inputs in the forms users have them, and how a model is called on them.

Accepted everywhere (example inputs, calibration data, evaluation batches):
- a tensor: ``model(x)``;
- a tuple or list of tensors: ``model(*inputs)``;
- a mapping (``dict``, a tokenizer's ``BatchEncoding``, an image processor's ``BatchFeature``): keyword
  arguments ``model(**inputs)``, unless the forward takes one positional argument and none of the mapping's
  keys names a parameter (sentence-transformers, ``nn.Sequential``, a ``forward(self, features)``): then
  ``model(inputs)``;
- a list of strings, for a model that carries a tokenizer (sentence-transformers' ``tokenize``, a Hugging
  Face model given ``tokenizer=``): tokenized into a batch first.

When no example inputs are given, :func:`auto_example` builds them for models that say what they take
(a tokenizer, or a Hugging Face ``PreTrainedModel``'s ``main_input_name`` and config).
"""

from __future__ import annotations

import copy
import functools
import inspect
import weakref
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..errors import CompressError

__all__ = ["call_model", "call_args", "INPUT_ERRORS", "first_line", "attach_tokenizer", "given_tokenizer", "find_tokenizer", "tokenize", "prepare_inputs",
           "prepare_data", "prepare_all", "auto_example", "is_sentences", "ACCEPTED_FORMS", "InputsError"]

ACCEPTED_FORMS = ("a tensor, a tuple of tensors (positional arguments), a dict or tokenizer output "
                  "(keyword arguments), or a list of strings for a model with a tokenizer (tokenizer=)")


class InputsError(CompressError, TypeError):
    """Inputs in a form the model cannot be called with."""


# model -> tokenizer given by the user (compress(..., tokenizer=tok)); kept weakly, copies registered too
_TOKENIZERS: weakref.WeakKeyDictionary[nn.Module, Any] = weakref.WeakKeyDictionary()

# Sentences used to build example inputs for a model that has a tokenizer but no example inputs: varied
# lengths so that padding and attention masks are exercised.
_SENTENCES = (
    "A small model runs fast on a CPU.",
    "Compression trades a little accuracy for size and speed.",
    "The weather is nice today.",
    "Pruning removes weights; quantization stores them in fewer bits, and distillation teaches a student.",
    "Hello world",
    "Which method fits this model best under a latency budget of ten milliseconds?",
    "Tensor decompositions factor a large layer into smaller ones.",
    "It works.",
)


def is_sentences(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(s, str) for s in value)


def attach_tokenizer(model: nn.Module, tokenizer: Any) -> None:
    """Remember ``tokenizer`` for ``model``: lists of strings given as inputs or data are tokenized by it."""
    if tokenizer is not None:
        if not callable(tokenizer):
            raise InputsError(f"tokenizer= must be a callable tokenizer (e.g. AutoTokenizer.from_pretrained(...)); "
                              f"got a {type(tokenizer).__name__}.")
        _TOKENIZERS[model] = tokenizer


def given_tokenizer(model: nn.Module) -> Any:
    """The tokenizer the user gave for ``model`` (None if none)."""
    return _TOKENIZERS.get(model)


def find_tokenizer(model: nn.Module) -> Any:
    """The tokenizer that goes with ``model``: one given by the user, else sentence-transformers' own."""
    if model in _TOKENIZERS:
        return _TOKENIZERS[model]
    if hasattr(model, "tokenizer"):  # sentence-transformers: the features its own modules expect
        for name in ("preprocess", "tokenize"):  # preprocess replaced tokenize in sentence-transformers 6
            if callable(getattr(type(model), name, None)):
                return getattr(model, name)
    return None


def tokenize(model: nn.Module, sentences: list[str]) -> Any:
    tokenizer = find_tokenizer(model)
    if tokenizer is None:
        raise InputsError(f"The inputs are a list of {len(sentences)} strings, but {type(model).__name__} has no "
                          f"tokenizer: pass tokenizer=<your tokenizer>, or tokenize them yourself and pass the "
                          f"result.")
    if getattr(tokenizer, "__name__", "") in ("preprocess", "tokenize"):  # sentence-transformers' own
        return tokenizer(list(sentences))
    encoded = tokenizer(list(sentences), padding=True, truncation=True, return_tensors="pt")
    accepted = _parameter_names(model)
    if accepted is not None and hasattr(encoded, "keys"):
        # a tokenizer may add keys this architecture does not take (BERT's token_type_ids for DistilBERT)
        for key in [k for k in encoded.keys() if k not in accepted]:
            del encoded[key]
    return encoded


@functools.lru_cache(maxsize=256)
def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls.forward)
    except (TypeError, ValueError):
        return None


def _parameter_names(model: nn.Module) -> set[str] | None:
    """Keyword names the forward accepts; None when it takes any (``**kwargs``) or cannot be read."""
    sig = _signature(type(model))
    if sig is None or any(p.kind is p.VAR_KEYWORD for p in sig.parameters.values()):
        return None
    return {n for n, p in sig.parameters.items() if n != "self" and p.kind is not p.VAR_POSITIONAL}


def _mapping_is_one_argument(model: nn.Module, inputs: Mapping) -> bool:
    sig = _signature(type(model))
    if sig is None:
        return False
    params = [p for n, p in sig.parameters.items() if n != "self"]
    if any(str(k) in {p.name for p in params} for k in inputs.keys()):
        return False
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    required = [p for p in positional if p.default is p.empty]
    return len(positional) >= 1 and len(required) <= 1


def call_args(model: nn.Module, inputs: Any) -> tuple[tuple, dict]:
    """The positional and keyword arguments ``model`` is called with for ``inputs`` (module docstring)."""
    if is_sentences(inputs):
        inputs = tokenize(model, list(inputs))
    if isinstance(inputs, Mapping):
        if _mapping_is_one_argument(model, inputs):
            # a copy: sentence-transformers' modules add their outputs to the features dict they are given
            return (dict(inputs),), {}
        return (), {str(k): v for k, v in inputs.items()}
    if isinstance(inputs, (tuple, list)):
        # a mapping among the arguments is copied (same type: a BatchEncoding stays one), for the same reason
        return tuple(copy.copy(a) if isinstance(a, Mapping) else a for a in inputs), {}
    return (inputs,), {}


def call_model(model: nn.Module, inputs: Any) -> Any:
    """Call ``model`` on ``inputs`` in any accepted form (module docstring)."""
    args, kwargs = call_args(model, inputs)
    return model(*args, **kwargs)


def prepare_inputs(model: nn.Module, inputs: Any) -> Any:
    """Example inputs with a list of strings tokenized (so every later call sees tensors)."""
    if is_sentences(inputs):
        return tokenize(model, list(inputs))
    return inputs


def prepare_all(model: nn.Module, example_inputs: Any, data: Any, tokenizer: Any = None) -> tuple[Any, Any]:
    """``(example_inputs, data)`` in tensors: ``tokenizer`` (if given) remembered for ``model``, then lists of
    strings tokenized by the model's tokenizer (a one-line :class:`InputsError` when it has none)."""
    attach_tokenizer(model, tokenizer)
    return prepare_inputs(model, example_inputs), prepare_data(model, data)


def prepare_data(model: nn.Module, data: Any, batch_size: int = 32) -> Any:
    """Data with a list of strings tokenized into a list of batches; ``(sentences, labels)`` keeps labels."""
    if is_sentences(data):
        return [tokenize(model, list(data[i:i + batch_size])) for i in range(0, len(data), batch_size)]
    if (isinstance(data, (tuple, list)) and len(data) == 2 and is_sentences(data[0])
            and hasattr(data[1], "__len__") and len(data[1]) == len(data[0])):
        sentences, labels = data
        labels = torch.as_tensor(labels)
        return [(tokenize(model, list(sentences[i:i + batch_size])), labels[i:i + batch_size])
                for i in range(0, len(sentences), batch_size)]
    return data


def _hf_config(model: nn.Module) -> Any:
    config = getattr(model, "config", None)
    return config if config is not None and hasattr(config, "to_dict") else None


def auto_example(model: nn.Module, data: Any = None) -> tuple[Any, str] | None:
    """``(example inputs, how they were built)`` for a model given none, or None when nothing fits.

    In order: the model's tokenizer on a few built-in sentences; a Hugging Face model's ``main_input_name``
    with shapes from its config (token ids, images, audio); the first batch of ``data``.
    """
    if find_tokenizer(model) is not None:
        return tokenize(model, list(_SENTENCES)), f"{len(_SENTENCES)} built-in sentences through the model's tokenizer"
    config = _hf_config(model)
    name = getattr(model, "main_input_name", None)
    generator = torch.Generator().manual_seed(0)
    if config is not None and name in ("input_ids", "pixel_values", "input_values", "input_features"):
        if name == "input_ids":
            vocab = int(getattr(config, "vocab_size", 100) or 100)
            ids = torch.randint(min(5, vocab - 1), vocab, (2, 12), generator=generator)
            example = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
            if "attention_mask" not in (_parameter_names(model) or {"attention_mask"}):
                example.pop("attention_mask")
            return example, "random token ids (2 x 12) from the model's config"
        if name == "pixel_values":
            size = getattr(config, "image_size", 224)
            size = tuple(size) if isinstance(size, (list, tuple)) else (int(size), int(size))
            channels = int(getattr(config, "num_channels", 3))
            return ({"pixel_values": torch.randn(2, channels, *size, generator=generator)},
                    f"random images (2 x {channels} x {size[0]} x {size[1]}) from the model's config")
        if name == "input_values":
            return ({"input_values": torch.randn(2, 16000, generator=generator)},
                    "random audio (2 x 16000 samples)")
        if name == "input_features":
            bins = int(getattr(config, "num_mel_bins", 80))
            return ({"input_features": torch.randn(2, bins, 3000, generator=generator)},
                    f"random features (2 x {bins} x 3000)")
    if data is not None:
        from .data import iter_batches

        try:
            first, _ = next(iter_batches(data, max_batches=1))
        except Exception:  # data the methods will judge themselves; no example from it
            return None
        return first, "the first batch of the data"
    return None


# What a model raises when it is called with inputs it cannot take (Hugging Face models raise AttributeError
# and KeyError on a wrong container, custom code may assert).
INPUT_ERRORS = (RuntimeError, TypeError, ValueError, IndexError, AttributeError, KeyError, AssertionError,
                NotImplementedError)


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:limit]}" if text else type(exc).__name__

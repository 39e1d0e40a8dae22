"""A zoo of models users bring, built from ``transformers`` config classes (random weights, no download)
plus hand-written hard cases, each with its natural inputs: a tokenizer's ``BatchEncoding`` for text
models, ``pixel_values`` / ``input_values`` tensors for vision and audio, a dict for a dict-taking forward.

Sizes are tiny (hidden 32, two layers) so that every registered method can run on every model in CI.
"""

from __future__ import annotations

import torch
from torch import nn

WORDS = ("the a an of to in is was it that for on with as by at from this be are or not have but they "
         "cat dog bird fish tree house car road river city model layer weight prune quantize small fast "
         "large slow red green blue one two three four five six seven eight nine ten").split()
SENTENCES = [
    "the cat is on the road", "a dog was in the house", "the river is blue and large",
    "one two three four five", "this model is small and fast", "prune the large layer",
    "a red car on the road", "the bird is in the tree", "quantize the weight to eight",
    "they are not slow but fast", "the fish was in the river", "a green tree by the house",
]


def word_tokenizer(max_length: int = 12):
    """A real ``PreTrainedTokenizerFast`` (word level, built in memory): returns ``BatchEncoding``."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "[CLS]": 2, "[SEP]": 3, "[MASK]": 4}
    for w in WORDS:
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]",
                                   cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]",
                                   model_max_length=max_length)
    return fast


VOCAB = 5 + len(dict.fromkeys(WORDS))


def padded_ids(lengths: list[int], seed: int = 0, width: int | None = None, vocab: int = 300) -> dict:
    """Token ids (1 .. vocab-1) padded on the right with id 0 to ``width`` (default: the longest of
    ``lengths``), their attention mask and zero token types: a tokenizer's padded batch of given lengths."""
    g = torch.Generator().manual_seed(seed)
    width = width or max(lengths)
    ids = torch.zeros(len(lengths), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, n in enumerate(lengths):
        ids[row, :n] = torch.randint(1, vocab, (n,), generator=g)
        mask[row, :n] = 1
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": torch.zeros_like(ids)}


def _text_inputs(tokenizer, names=None, n=4):
    enc = tokenizer(SENTENCES[:n], padding=True, truncation=True, return_tensors="pt")
    if names is not None:  # the tokenizer of this model family returns only these keys (DistilBERT: no types)
        for key in list(enc.keys()):
            if key not in names:
                del enc[key]
    return enc


def bert():
    from transformers import BertConfig, BertForMaskedLM

    cfg = BertConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=32)
    tok = word_tokenizer()
    return BertForMaskedLM(cfg), _text_inputs(tok), tok


def distilbert():
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    cfg = DistilBertConfig(vocab_size=VOCAB, dim=32, n_layers=2, n_heads=4, hidden_dim=64,
                           max_position_embeddings=32, num_labels=3)
    tok = word_tokenizer()
    return DistilBertForSequenceClassification(cfg), _text_inputs(tok, ("input_ids", "attention_mask")), tok


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    cfg = GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=2, n_head=4, n_positions=32)
    tok = word_tokenizer()
    return GPT2LMHeadModel(cfg), _text_inputs(tok, ("input_ids", "attention_mask")), tok


def t5_encoder():
    from transformers import T5Config, T5EncoderModel

    cfg = T5Config(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)
    tok = word_tokenizer()
    return T5EncoderModel(cfg), _text_inputs(tok, ("input_ids", "attention_mask")), tok


def vit():
    from transformers import ViTConfig, ViTForImageClassification

    cfg = ViTConfig(image_size=32, patch_size=8, num_channels=3, hidden_size=32, num_hidden_layers=2,
                    num_attention_heads=4, intermediate_size=64, num_labels=5)
    return ViTForImageClassification(cfg), torch.randn(2, 3, 32, 32), None


def wav2vec2():
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                         conv_dim=(16, 16), conv_stride=(5, 2), conv_kernel=(10, 3), num_conv_pos_embeddings=16,
                         num_conv_pos_embedding_groups=4, do_stable_layer_norm=False, mask_time_prob=0.0)
    return Wav2Vec2Model(cfg), torch.randn(2, 800), None


def hf_resnet():
    from transformers import ResNetConfig, ResNetForImageClassification

    cfg = ResNetConfig(embedding_size=16, hidden_sizes=[16, 32], depths=[1, 1], layer_type="basic", num_labels=5)
    return ResNetForImageClassification(cfg), torch.randn(2, 3, 32, 32), None


def convnext():
    from transformers import ConvNextConfig, ConvNextForImageClassification

    cfg = ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 1], num_stages=2, num_labels=5, image_size=32)
    return ConvNextForImageClassification(cfg), torch.randn(2, 3, 32, 32), None


def mobilevit():
    from transformers import MobileViTConfig, MobileViTForImageClassification

    cfg = MobileViTConfig(image_size=32, patch_size=2, hidden_sizes=[16, 24, 32],
                          neck_hidden_sizes=[8, 8, 16, 16, 24, 24, 48], num_attention_heads=2, num_labels=5)
    return MobileViTForImageClassification(cfg), torch.randn(2, 3, 32, 32), None


class TiedLM(nn.Module):
    """A language model whose output head shares the embedding's weight (GPT-2 / Llama style)."""

    def __init__(self, vocab: int = 60, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.embed.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        x = self.embed(ids)
        return self.head(self.norm(x + self.mlp(x)))


class DictModel(nn.Module):
    """A forward that takes one dict of named inputs (as sentence-transformers modules do)."""

    def __init__(self) -> None:
        super().__init__()
        self.image = nn.Linear(16, 32)
        self.meta = nn.Linear(8, 32)
        self.head = nn.Sequential(nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 4))

    def forward(self, features: dict) -> dict:
        h = self.image(features["image"]) + self.meta(features["meta"])
        return {"logits": self.head(h)}


class LSTMLM(nn.Module):
    def __init__(self, vocab: int = 60, dim: int = 32) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, dim)
        self.lstm = nn.LSTM(dim, 48, num_layers=2, batch_first=True)
        self.proj = nn.Linear(48, 64)
        self.head = nn.Linear(64, vocab)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.embed(ids))
        return self.head(torch.relu(self.proj(out)))


class RawParamModel(nn.Module):
    """Weights held as raw ``nn.Parameter`` used in a matmul (no Linear), beside one ordinary Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(32, 64) / 6)
        self.b = nn.Parameter(torch.zeros(64))
        self.out = nn.Linear(64, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(torch.relu(x @ self.w + self.b))


def tied_lm():
    return TiedLM(), torch.randint(0, 60, (4, 10)), None


def dict_model():
    return DictModel(), {"image": torch.randn(4, 16), "meta": torch.randn(4, 8)}, None


def lstm_lm():
    return LSTMLM(), torch.randint(0, 60, (4, 10)), None


def raw_param():
    return RawParamModel(), torch.randn(4, 32), None


ZOO = {
    "bert": bert, "distilbert": distilbert, "gpt2": gpt2, "t5_encoder": t5_encoder, "vit": vit,
    "wav2vec2": wav2vec2, "hf_resnet": hf_resnet, "convnext": convnext, "mobilevit": mobilevit,
    "tied_lm": tied_lm, "dict_model": dict_model, "lstm_lm": lstm_lm, "raw_param": raw_param,
}


def make(name: str, seed: int = 0):
    """``(model, natural example inputs, tokenizer or None)``, deterministic for a seed; eval mode."""
    torch.manual_seed(seed)
    model, inputs, tok = ZOO[name]()
    return model.eval(), inputs, tok

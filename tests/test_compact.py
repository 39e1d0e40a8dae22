"""Compact artifacts (``save(..., compact=True)``): sparse forms, packed integer codes, one codec; exact round
trips, the dense save's digest, and untrusted files refused in one line before anything big is allocated."""

from __future__ import annotations

import json

import pytest
import torch
from models import make

import jupyter_compress as jc
from jupyter_compress.io import compact as compact_mod
from jupyter_compress.io import load, read_manifest, save
from jupyter_compress.io.artifact import load_tensors
from jupyter_compress.io.compact import _decompress, decode, encode, tensor_forms
from jupyter_compress.methods import PruneConfig, WeightOnlyConfig

PLANS = {
    "dense": jc.Plan.of(PruneConfig(amount=0.0)),
    "pruned90": jc.Plan.of(PruneConfig(amount=0.9)),
    "int8": jc.Plan.of(WeightOnlyConfig(bits=8, group_size=16)),
    "int4": jc.Plan.of(WeightOnlyConfig(bits=4, group_size=16)),
    "pruned90+int4": jc.Plan.of(PruneConfig(amount=0.9), WeightOnlyConfig(bits=4, group_size=16)),
}


def _same_bits(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k].reshape(-1).view(torch.uint8), b[k].reshape(-1).view(torch.uint8)), k


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
@pytest.mark.parametrize("name", PLANS)
def test_compact_round_trip_is_bit_identical_with_the_dense_digest(tmp_path, name, codec):
    model, x = make("mlp")
    small, report = jc.compress(model, PLANS[name], example_inputs=x)
    dense = save(small, report, tmp_path / "dense.safetensors", example_inputs=x)
    packed = save(small, report, tmp_path / "compact.safetensors", example_inputs=x, compact=True, codec=codec)
    # the same manifest, so the same digest of weights + manifest, as a dense save
    assert read_manifest(packed)["sha256"] == read_manifest(dense)["sha256"]
    loaded = load(lambda: make("mlp", seed=5)[0], packed)
    _same_bits(loaded.state_dict(), small.state_dict())
    _same_bits(load_tensors(packed), load_tensors(dense))
    with torch.no_grad():
        assert torch.equal(loaded(x), small(x))
    if "pruned" in name:  # else the tiny model's bytes are mostly manifest, and int codes barely compress
        assert packed.stat().st_size < dense.stat().st_size


def test_compact_is_much_smaller_for_a_pruned_model_and_stores_sparse_and_packed_forms(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(256, 256), torch.nn.ReLU(), torch.nn.Linear(256, 64))
    small, report = jc.compress(model, PruneConfig(amount=0.9))
    dense = save(small, report, tmp_path / "d.safetensors").stat().st_size
    packed = save(small, report, tmp_path / "c.safetensors", compact=True).stat().st_size
    # 10% of fp32 values + about one byte of index each: at least 5x smaller (measured about 7x)
    assert dense / packed >= 5
    forms = tensor_forms(*encode(small.state_dict(), "none"))
    assert forms["0.weight"]["form"] in ("relidx", "bitmap") and forms["0.bias"]["form"] == "dense"
    # int8 codes in [-7, 7] take 4 bits
    q8, _ = jc.compress(model, WeightOnlyConfig(bits=8, group_size=32))
    codes = q8[0].qweight.clamp(-7, 7)
    assert tensor_forms(*encode({"c": codes}, "zstd"))["c"]["bits"] == 4


def test_awkward_tensors_round_trip_bit_exactly():
    torch.manual_seed(0)
    w = torch.randn(300, 200)
    w[torch.rand_like(w) < 0.99] = 0  # long zero runs: relative indices need fillers
    idx = torch.randint(1, 32, (100, 70), dtype=torch.uint8)
    idx[torch.rand(100, 70) < 0.9] = 0
    tensors = {"sparse": w, "neg0_nan": torch.tensor([-0.0, float("nan"), 0.0, 1e-45]),
               "bf16": torch.randn(33).bfloat16(), "fp16": torch.randn(7).half(), "f64": torch.randn(3).double(),
               "i64": torch.tensor([2 ** 62, -(2 ** 62)]), "count": torch.tensor(7), "bool": torch.rand(99) > 0.5,
               "empty": torch.zeros(0, 4), "zeros": torch.zeros(1000), "idx": idx,
               "i32": torch.randint(-5, 5, (50,), dtype=torch.int32), "i16": torch.tensor([1, 0, 0, -3], dtype=torch.int16)}
    for codec in ("zstd", "lz4", "none"):
        blob, header = encode(tensors, codec)
        _same_bits(decode(blob, header, "x"), tensors)
    forms = tensor_forms(blob, header)
    assert forms["sparse"]["form"] == "relidx" and forms["zeros"]["nbytes"] == 0
    assert forms["idx"]["bits"] == 5  # 5-bit cluster indices take 5 bits


def _rewrite(path, out, edit):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(path), framework="pt") as f:
        meta = dict(f.metadata())
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    edit(meta, tensors)
    save_file(tensors, str(out), metadata=meta)
    return out


KEY, PAYLOAD = "jupyter_compress.compact", "__jupyter_compress_compact__"


def _header_edit(key, value):
    def edit(meta, tensors):
        header = json.loads(meta[KEY])
        header[key] = value
        meta[KEY] = json.dumps(header)
    return edit


def _table_edit(key, value, index):
    """Change the table inside the payload (decompressed; written back with codec 'none')."""
    def edit(meta, tensors):
        header = json.loads(meta[KEY])
        raw = _decompress(tensors[PAYLOAD].numpy(), header["codec"], header["raw_bytes"], ValueError)
        table = json.loads(raw[:header["table_bytes"]].tobytes())
        table[index][key] = value
        text = json.dumps(table).encode()
        new = text + raw[header["table_bytes"]:].tobytes()
        header.update(codec="none", raw_bytes=len(new), table_bytes=len(text))
        meta[KEY] = json.dumps(header)
        tensors[PAYLOAD] = torch.frombuffer(bytearray(new), dtype=torch.uint8)
    return edit


EDITS = {
    "huge shape": _table_edit("shape", [1 << 40, 1 << 8], 0),
    "huge dense total": _header_edit("dense_bytes", 1 << 49),
    "raw larger than dense": _header_edit("raw_bytes", 1 << 49),
    "table larger than raw": _header_edit("table_bytes", 1 << 20),
    "unknown codec": _header_edit("codec", "pickle"),
    "unknown dtype": _table_edit("dtype", "object", 0),
    "unknown form": _table_edit("form", "eval", 0),
    "bad offset": _table_edit("offset", 3, 1),
    "bad bits": _table_edit("bits", 99, 0),
    "bad count": _table_edit("count", 10 ** 9, 1),
    "not json": lambda meta, tensors: meta.__setitem__(KEY, "{nope"),
    "flipped payload": lambda meta, tensors: tensors[PAYLOAD].__setitem__(-9, 1),
    "truncated payload": lambda meta, tensors: tensors.__setitem__(PAYLOAD, tensors[PAYLOAD][:-20].clone()),
    "extra tensor": lambda meta, tensors: tensors.__setitem__("evil", torch.zeros(3)),
    "a changed value": lambda meta, tensors: (_table_edit("form", "dense", 0)(meta, tensors),  # no-op, uncoded
                                              tensors[PAYLOAD].__setitem__(-1, tensors[PAYLOAD][-1] ^ 1)),
}


@pytest.mark.parametrize("codec", ["zstd", "lz4"])
@pytest.mark.parametrize("edit", EDITS)
def test_damaged_compact_files_fail_in_one_line(tmp_path, edit, codec):
    model, x = make("mlp")
    small, report = jc.compress(model, PruneConfig(amount=0.9))
    path = save(small, report, tmp_path / "c.safetensors", compact=True, codec=codec)
    bad = _rewrite(path, tmp_path / "bad.safetensors", EDITS[edit])
    with pytest.raises(jc.CompressError) as info:
        load(lambda: make("mlp")[0], bad)
    assert "\n" not in str(info.value) and "bad.safetensors" in str(info.value)
    if edit == "a changed value":  # decodes fine: the digest catches it
        assert "do not match the digest" in str(info.value)


def test_a_payload_bigger_than_memory_is_refused_before_allocation(tmp_path, monkeypatch):
    model, _ = make("mlp")
    path = save(model, jc.Plan.of(PruneConfig(amount=0.5)), tmp_path / "c.safetensors", compact=True)
    monkeypatch.setattr(compact_mod, "_memory_bytes", lambda: 1000)
    with pytest.raises(jc.CompressError, match="more than this machine's 1000 bytes of memory"):
        load_tensors(path)


def test_bad_arguments_are_one_line_errors(tmp_path):
    model, _ = make("mlp")
    with pytest.raises(jc.CompressError, match="codec must be one of .* got 'gzip'"):
        save(model, jc.Plan.of(PruneConfig(amount=0.5)), tmp_path / "c.safetensors", compact=True, codec="gzip")
    with pytest.raises(jc.CompressError, match="compact must be True or False; got 'yes'"):
        save(model, jc.Plan.of(PruneConfig(amount=0.5)), tmp_path / "c.safetensors", compact="yes")
    assert not (tmp_path / "c.safetensors").exists()


@pytest.mark.parametrize("codec", [None, "lz4"])
def test_cli_run_compact_writes_a_compact_artifact_with_the_dense_weights(tmp_path, codec, capsys):
    from safetensors import safe_open

    from jupyter_compress.__main__ import main

    plan = tmp_path / "plan.yaml"
    plan.write_text("steps:\n- {method: prune, amount: 0.9}\n")
    common = ["run", str(plan), "--model", "cli_models:cnn", "--example", "cli_models:cnn_example", "--json"]
    assert main([*common, "--out", str(tmp_path / "dense")]) == 0
    assert main([*common, "--out", str(tmp_path / "compact"), "--compact", *([codec] if codec else [])]) == 0
    capsys.readouterr()
    with safe_open(str(tmp_path / "compact" / "model.safetensors"), framework="pt") as f:
        layout = json.loads(f.metadata()["jupyter_compress.compact"])
    assert layout["codec"] == (codec or "zstd")
    metrics = json.loads((tmp_path / "compact" / "report.json").read_text())["metrics_after"]
    assert 0 < metrics["disk_compact_bytes"] < metrics["disk_artifact_bytes"]  # measured, in the report
    _same_bits(load_tensors(tmp_path / "compact"), load_tensors(tmp_path / "dense"))
    assert main([*common, "--out", str(tmp_path / "x"), "--compact", "gzip"]) == 2


def test_the_report_gets_measured_artifact_sizes(tmp_path):
    from jupyter_compress.io.artifact import artifact_sizes, record_artifact_sizes

    model = torch.nn.Sequential(torch.nn.Linear(128, 128), torch.nn.ReLU(), torch.nn.Linear(128, 16))
    small, report = jc.compress(model, PruneConfig(amount=0.9))
    record_artifact_sizes(report, model, small)
    sizes = artifact_sizes(small, report)
    dense_file = save(small, report, tmp_path / "d.safetensors").stat().st_size
    # the same bytes as a real save (the report saved here holds the sizes: a few dozen bytes more)
    assert abs(sizes["disk_artifact_bytes"] - dense_file) < 200
    after, before = report.metrics_after, report.metrics_before
    assert before["disk_artifact_bytes"] > 4 * 128 * 144  # fp32 weights and the file's header
    assert after["disk_compact_bytes"] * 4 < after["disk_artifact_bytes"]
    text = report.to_text()
    assert "disk_artifact_bytes" in text and "disk_compact_bytes" in text and "bytes in memory" in text


def test_gradual_pruning_and_distillation_leave_positive_zeros():
    """Masks are re-applied with masked_fill_: multiplying by the mask would leave -0.0 for negative weights,
    which a compact artifact must store as values (bit-exact), not as the zeros it skips."""
    model, _ = make("mlp")

    def shift(m, step):  # a "fine-tune" that makes every weight negative before the masks are re-applied
        with torch.no_grad():
            for p in m.parameters():
                p.sub_(10.0)

    pruned, _ = jc.prune_gradually(model, PruneConfig(amount=0.9), steps=2, fine_tune=shift)
    weights = [m.weight for m in pruned.modules() if isinstance(m, torch.nn.Linear)]
    assert all(int((w == 0).sum()) > 0.85 * w.numel() for w in weights)
    assert not any(torch.signbit(w[w == 0]).any() for w in weights)
    blob, header = encode(pruned.state_dict(), "none")
    dense = sum(w.numel() * 4 for w in weights)
    assert blob.numel() < 0.25 * dense  # 10% of the values plus small gaps


@pytest.mark.parametrize("width", [1, 3, 4, 5, 7, 8, 11, 33])
def test_bit_packing_round_trips_across_chunks(width, monkeypatch):
    import numpy as np

    from jupyter_compress.io import _bits

    monkeypatch.setattr(_bits, "CHUNK", 16)  # many chunks, and a last one that ends mid-byte
    values = np.random.default_rng(width).integers(0, 2 ** width, size=203, dtype=np.uint64)
    packed = _bits.pack(values, width)
    assert len(packed) == _bits.packed_bytes(203, width) == (203 * width + 7) // 8
    assert np.array_equal(_bits.unpack(np.frombuffer(packed, dtype=np.uint8), 203, width), values)

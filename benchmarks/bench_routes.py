"""Deployment routes on CPU (issue 21): the int8 preset against the runtimes a user would pick instead.

MiniLM's transformer part (the ``BertModel`` inside the sentence-transformers model, called on tokenized inputs,
returning the last hidden states) at batch 32 and batch 1. In one process, PyTorch fp32 and every route are
timed interleaved (``bench_quantize.interleaved_speedups``: each round times the baseline and every route,
order rotated), so each speedup is a ratio measured in this run. Routes:

- ONNX Runtime: the whole transformer exported (``torch.onnx.export``, dynamic batch and sequence axes) and
  quantized by ``onnxruntime.quantization.quantize_dynamic`` (per channel, int8 weights, its other defaults);
- OpenVINO: ``openvino.convert_model`` of the PyTorch model, ``openvino.compile_model(..., "CPU")`` with the
  plugin's defaults (which compute in bf16 on CPUs with bf16 instructions), and again with fp32 forced;
- OpenVINO + NNCF int8: ``nncf.quantize`` with ``ModelType.TRANSFORMER`` on the calibration sentences;
- torch.ao dynamic int8 per channel;
- our preset: ``compress(model, Plan.of(DynamicQuantConfig()), example_inputs=..., data=sentences)``, which
  measures its own routes (OpenVINO + NNCF, ONNX Runtime, torch) and keeps the fastest within cosine 0.995.
  On OpenVINO it also trims padding (``trim_padding='auto'``: the rows run in groups of similar length, as
  mean pooling never reads padded positions), which the peers, given the same padded batch, compute;
- the same with the opt-in ``seq_bucket=8`` (each padded sequence length on its own fixed-length graph),
  reported beside it, not a peer and without a target of its own.

Batch 32 is the first 32 held-out sentences as a tokenizer pads them (to the longest; 44% of the positions
are real). A third, report-only shape shows the same 32 sentences cut to 24 tokens with no padding, where
trimming has nothing to cut and the preset runs the peer's graph. Every route runs on torch's intra-op
thread count. Cosine: mean-pooled embeddings of held-out sentences
(disjoint from the calibration sentences, both from the offline corpus) against fp32's. Summary rows state the
issue's targets as ratios of this run: preset speedup / best peer speedup >= 1.0 at batch 32 and >= 0.9 at
batch 1, preset cosine >= 0.995. That ratio is the best peer's latency over the preset's, and it is timed head
to head (``timing.paired_speedup``: the two alternate, round by round), so the fp32 baseline's noise is not in
it; its note also gives the ratio of the two speedup rows. Without openvino / nncf (``pip install 'jupyter-compress[deploy]'``) their
rows say so and the ratios are against the peers measured.
"""

from __future__ import annotations

import io
import logging
import os
import sys
import tempfile
import time

import torch
from torch import nn

from jupyter_compress import DynamicQuantConfig, Plan, compress

from .bench_quantize import _torch_ao, interleaved_speedups
from .timing import at_least, paired_speedup, rounds_repeats, skipped, speedup_note

BATCH = 32
PRESET = "MiniLM int8 preset (quantize.dynamic)"
BUCKETS = "MiniLM int8 preset, seq_bucket=8 (one graph per padded length)"
INPUTS = ("input_ids", "attention_mask", "token_type_ids")
INSTALL = "pip install 'jupyter-compress[deploy]'"


class _Hidden(nn.Module):
    """The transformer part as timed: tokenized inputs in, last hidden states out (what mean pooling reads)."""

    def __init__(self, bert: nn.Module):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


class _OrtSession(nn.Module):
    """An ONNX Runtime session called like :class:`_Hidden` (measurement only)."""

    def __init__(self, onnx_bytes: bytes, threads: int):
        super().__init__()
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return torch.from_numpy(self.session.run(None, {n: given[n].numpy() for n in self.names})[0])


class _OpenVino(nn.Module):
    """An OpenVINO compiled model called like :class:`_Hidden` (measurement only)."""

    def __init__(self, compiled):
        super().__init__()
        self.compiled = compiled
        self.names = [i.get_any_name() for i in compiled.inputs]

    def forward(self, input_ids, attention_mask, token_type_ids=None):
        given = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        return torch.from_numpy(self.compiled({n: given[n].numpy() for n in self.names})[0])


def _quiet_tools():
    """Export / quantization warnings, logs and telemetry off; their progress bars on stderr (stdout carries
    the table)."""
    from jupyter_compress.methods.quantize.ov import quiet_tools

    return quiet_tools(progress=sys.stderr)


def _pooled(model: nn.Module, batches: list[dict]) -> torch.Tensor:
    """Mean-pooled (attention mask) sentence embeddings, as sentence-transformers' MiniLM pools."""
    out = []
    with torch.inference_mode():
        for enc in batches:
            hidden = model(**enc).float()
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            out.append((hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9))
    return torch.cat(out)


def _ort_int8(hidden: nn.Module, enc: dict, threads: int) -> nn.Module:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    buffer = io.BytesIO()
    axes = {n: {0: "batch", 1: "sequence"} for n in (*INPUTS, "last_hidden_state")}
    with _quiet_tools(), torch.no_grad(), tempfile.TemporaryDirectory() as tmp:
        torch.onnx.export(hidden, tuple(enc[n] for n in INPUTS), buffer, dynamo=False, input_names=list(INPUTS),
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17)
        src, dst = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(buffer.getvalue())
        quantize_dynamic(src, dst, per_channel=True, weight_type=QuantType.QInt8)
        with open(dst, "rb") as f:
            return _OrtSession(f.read(), threads)


def _precision(compiled) -> str:
    """The precision the CPU plugin computes float ops in (bf16 by default on CPUs with bf16 instructions)."""
    value = compiled.get_property("INFERENCE_PRECISION_HINT")
    return value.to_string() if hasattr(value, "to_string") else str(value)


def _openvino_routes(hidden: nn.Module, enc: dict, calibration: list[dict], threads: int) -> dict:
    """name -> (module, note) or (None, why skipped) or an exception, for the three OpenVINO routes."""
    try:
        with _quiet_tools():
            import openvino as ov
    except ImportError as exc:
        why = f"skipped: openvino not installed ({INSTALL})"
        return {name: (None, why, exc) for name in ("ov", "ov32", "nncf")}
    out: dict = {}
    try:
        start = time.perf_counter()
        with _quiet_tools():
            ov_model = ov.convert_model(hidden, example_input=dict(enc))
        converted = time.perf_counter() - start
        for key, config in (("ov", {}), ("ov32", {"INFERENCE_PRECISION_HINT": "f32"})):
            compiled = ov.compile_model(ov_model, "CPU", {"INFERENCE_NUM_THREADS": threads, **config})
            out[key] = (_OpenVino(compiled), f"inference precision {_precision(compiled)}, convert {converted:.0f} s")
    except Exception as exc:  # a conversion this OpenVINO cannot do: its rows say why, the others still run
        return {name: exc for name in ("ov", "ov32", "nncf")}
    try:
        with _quiet_tools():
            import nncf
    except ImportError as exc:
        out["nncf"] = (None, f"skipped: nncf not installed ({INSTALL})", exc)
        return out
    try:
        start = time.perf_counter()
        with _quiet_tools():
            nncf.set_log_level(logging.ERROR)
            dataset = nncf.Dataset(calibration, lambda item: {k: v.numpy() for k, v in item.items()})
            int8 = nncf.quantize(ov_model, dataset, model_type=nncf.ModelType.TRANSFORMER,
                                 subset_size=len(calibration))
        took = time.perf_counter() - start
        compiled = ov.compile_model(int8, "CPU", {"INFERENCE_NUM_THREADS": threads})
        out["nncf"] = (_OpenVino(compiled), f"{len(calibration)} calibration sentences, quantize {took:.0f} s; "
                                            f"non-int8 ops in {_precision(compiled)}")
    except Exception as exc:
        out["nncf"] = exc
    return out


def _unpadded(enc: dict, width: int) -> dict:
    """The rows of ``enc`` at least ``width`` tokens long, cut to ``width`` (their last token made [SEP] again),
    repeated to the batch size: a batch with no padding at all."""
    keep = enc["attention_mask"].sum(1) >= width
    out = {k: v[keep][:, :width].clone() for k, v in enc.items()}
    out["input_ids"][:, -1] = enc["input_ids"][0, enc["attention_mask"][0].sum() - 1]  # [SEP]
    reps = -(-BATCH // out["input_ids"].shape[0])
    return {k: v.repeat(reps, 1)[:BATCH] for k, v in out.items()}


def _error_row(name: str, exc: BaseException) -> dict:
    text = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
    return {"name": name, "figure": "speedup vs PyTorch fp32", "baseline": "-", "value": "error", "target": "-",
            "status": "error", "note": text}


def rows(quick: bool) -> list[dict]:
    from jupyter_compress.examples.minilm import corpus, cosine, features, load_minilm

    model = load_minilm()
    calibration = corpus(32 if quick else 100)
    held = corpus(64 if quick else 128, offset=600)  # disjoint from the calibration sentences

    def tokens(sentences: list[str]) -> dict:
        return {k: v for k, v in features(model, sentences).items() if k in INPUTS}

    baseline = _Hidden(model[0].auto_model.eval()).eval()
    held_batches = [tokens(held[i:i + BATCH]) for i in range(0, len(held), BATCH)]
    one = sorted(held, key=len)[len(held) // 2]  # batch 1: the held-out sentence of median length
    inputs = {BATCH: held_batches[0], 1: tokens([one]), "even": _unpadded(tokens(held[:BATCH]), 24)}
    threads = torch.get_num_threads()
    reference = _pooled(baseline, held_batches)

    routes: dict[str, nn.Module] = {}
    notes: dict[str, str] = {}
    out: list[dict] = []

    start = time.perf_counter()
    preset, report = compress(model, Plan.of(DynamicQuantConfig(compare_routes=False)),
                              example_inputs=features(model, calibration[:BATCH]), data=calibration, measure=False)
    route = report.plan["steps"][0]["backend"]  # measured by the preset and pinned in its plan
    routes[PRESET] = _Hidden(preset[0].auto_model)
    notes[PRESET] = f"route chosen by measuring: {route}, {len(calibration)} calibration sentences, compress " \
                    f"{time.perf_counter() - start:.0f} s"

    start = time.perf_counter()
    bucketed, report = compress(model, Plan.of(DynamicQuantConfig(compare_routes=False, seq_bucket=8)),
                                example_inputs=features(model, calibration[:BATCH]), data=calibration, measure=False)
    routes[BUCKETS] = _Hidden(bucketed[0].auto_model)
    notes[BUCKETS] = f"route chosen by measuring: {report.plan['steps'][0]['backend']}; sequence padded to a " \
                     f"multiple of 8 and each length compiled once (~0.3 s, ~60 MB each; opt-in), compress " \
                     f"{time.perf_counter() - start:.0f} s"

    ort_name = "MiniLM ONNX Runtime quantize_dynamic int8 per-channel (whole transformer exported)"
    try:
        start = time.perf_counter()
        routes[ort_name] = _ort_int8(baseline, inputs[BATCH], threads)
        notes[ort_name] = f"ONNX Runtime defaults otherwise (every MatMul), export + quantize " \
                          f"{time.perf_counter() - start:.0f} s"
    except Exception as exc:  # a route that fails says so in its row; the others still run
        out.append(_error_row(ort_name, exc))

    names = {"ov": "MiniLM OpenVINO (fp32 model, CPU plugin defaults)",
             "ov32": "MiniLM OpenVINO fp32 (INFERENCE_PRECISION_HINT=f32)",
             "nncf": "MiniLM OpenVINO + NNCF int8 (ModelType.TRANSFORMER)"}
    for key, result in _openvino_routes(baseline, inputs[BATCH], [tokens([s]) for s in calibration],
                                        threads).items():
        if isinstance(result, BaseException):
            out.append(_error_row(names[key], result))
        elif result[0] is None:
            out.append({**skipped(names[key], "speedup vs PyTorch fp32", result[1]), "note": INSTALL})
        else:
            routes[names[key]], notes[names[key]] = result

    ao_name = "MiniLM torch.ao dynamic int8 per-channel"
    routes[ao_name] = _torch_ao(baseline, per_channel=True)
    notes[ao_name] = "quantize_dynamic, per_channel_dynamic_qconfig, every Linear"

    cosines = {name: cosine(reference, _pooled(m, held_batches)) for name, m in routes.items()}
    candidates = {PRESET: routes[PRESET], **{n: m for n, m in routes.items() if n != PRESET}}
    timing = {BATCH: {"rounds": 5, "repeats": 1} if quick else {"rounds": 11, "repeats": 3},
              1: rounds_repeats(quick)}
    summary = []
    timing["even"] = timing[BATCH]
    for batch, bound in ((BATCH, 1.0), ("even", None), (1, 0.9)):
        x = inputs[batch]
        speed = interleaved_speedups(baseline, candidates, x, **timing[batch])
        shape = f"{x['input_ids'].shape[0]} x {x['input_ids'].shape[1]} tokens, " \
                f"{float(x['attention_mask'].float().mean()):.0%} real"
        if batch == "even":
            best = max((n for n in speed if n not in (PRESET, BUCKETS)), key=lambda n: speed[n]["speedup"])
            summary.append({"name": f"{PRESET} against the best peer, batch {BATCH} without padding",
                        "figure": "preset speedup / best peer speedup",
                        "baseline": f"best peer {speed[best]['speedup']:.2f}x",
                        "value": f"{speed[PRESET]['speedup'] / speed[best]['speedup']:.2f}", "target": "-",
                        "status": "-", "note": f"{shape}: nothing to trim, the batch runs as given; preset "
                                                   f"{speed[PRESET]['speedup']:.2f}x, best peer: {best}; report only"})
            continue
        for name, r in speed.items():
            cos = cosines[name]
            out.append({"name": f"{name}, batch {batch}", "figure": "speedup vs PyTorch fp32",
                        "baseline": f"fp32 {r['baseline_ms']:.1f} ms", "value": f"{r['speedup']:.2f}x",
                        "note": f"cosine {float(cos.mean()):.4f} (min {float(cos.min()):.4f}); {shape}; "
                                f"{notes[name]}; {speedup_note(r)}"})
        peers = {n: r["speedup"] for n, r in speed.items() if n not in (PRESET, BUCKETS)}
        best = max(peers, key=peers.get) if peers else None
        missing = sorted((set(names.values()) | {ort_name}) - set(routes))
        if best:
            # The ratio of the two speedups is the peer's latency over the preset's (same fp32 baseline). Timed
            # head to head (the two alternate, round by round) the baseline's noise drops out of it; the ratio of
            # the medians above carries the noise of three timings and is given beside it.
            duel = paired_speedup(candidates[best], routes[PRESET], x, **timing[batch])
            ratio = duel["speedup"]
            how = f"head to head, {timing[batch]['rounds']} rounds: {duel['candidate_ms']:.2f} against " \
                  f"{duel['baseline_ms']:.2f} ms, {speedup_note(duel)}; from the speedup rows " \
                  f"{speed[PRESET]['speedup'] / peers[best]:.2f}"
        summary.append({
            "name": f"{PRESET} against the best peer, batch {batch}", "figure": "preset speedup / best peer speedup",
            "baseline": f"best peer {peers[best]:.2f}x" if best else "no peer measured",
            "value": f"{ratio:.2f}" if best else "n/a",
            **(at_least(ratio, bound, f">= {bound:g}") if best else {"target": f">= {bound:g}", "status": "short"}),
            "note": (f"preset {speed[PRESET]['speedup']:.2f}x; best peer: {best}; {how}" if best else "")
                    + (f"; not measured: {', '.join(missing)}" if missing else "")})
        if best and BUCKETS in speed:  # the opt-in: reported beside the default, no target of its own
            summary.append({
                "name": f"{BUCKETS} against the best peer, batch {batch}",
                "figure": "preset speedup / best peer speedup", "baseline": f"best peer {peers[best]:.2f}x",
                "value": f"{speed[BUCKETS]['speedup'] / peers[best]:.2f}", "target": "-", "status": "-",
                "note": f"opt-in seq_bucket=8: {speed[BUCKETS]['speedup']:.2f}x at this repeated shape; costs a "
                        f"compile and memory per new length"})
    cos = cosines[PRESET]
    summary.append({"name": PRESET, "figure": f"mean cosine to fp32 (mean-pooled), {len(held)} held-out sentences",
                    "baseline": "fp32 1.0000", "value": f"{float(cos.mean()):.4f}",
                    **at_least(float(cos.mean()), 0.995, ">= 0.995"),
                    "note": f"min {float(cos.min()):.4f}; calibrated on {len(calibration)} other sentences"})
    return summary + out


if __name__ == "__main__":
    from .__main__ import format_table

    print(format_table(rows("--quick" in sys.argv)))

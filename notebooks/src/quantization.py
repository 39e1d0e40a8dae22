# %% [markdown]
# # Quantization: fewer bits per number, and when that is faster
#
# Quantization stores weights (and sometimes activations) as 8-bit or 4-bit integers with a scale,
# instead of 32-bit floats: 4x to 8x fewer bytes. Whether it is also *faster* depends on whether the
# hardware has fast integer kernels for the operation, and on whether the cost of converting to and
# from integers is paid back. Three families:
#
# - **Dynamic int8**: weights int8 ahead of time, activations quantized at each call from their
#   observed range. No calibration needed; the usual choice for Linear-heavy models (transformers).
# - **Static int8**: activation ranges measured once on calibration data (observers), so the whole
#   network can run in integers. The usual choice for CNNs; Conv-BatchNorm-ReLU are fused first.
# - **Weight-only int8 / int4** (group-wise scales): smaller storage, fidelity you can check per layer.
#   int4 layers run PyTorch's packed int4 CPU matmul where it fits (bf16 activations): faster at small
#   batches; int8 weights, and layers the kernel does not take, are dequantized at each call (no speedup).
#
# Every report gives, per layer, the weight SQNR (signal-to-quantization-noise ratio, in dB: 6 dB per
# bit is the rule of thumb) and the relative output error on the calibration data.

# %%
import torch

import jupyter_compress as jc
from jupyter_compress.core.metrics_speed import paired_latency
from jupyter_compress.examples.digits import digits_data, evaluate, train_digits_cnn

model, X_test, y_test = train_digits_cnn(epochs=10)
X_train, _, y_train, _ = digits_data(0)
evaluate_fn = evaluate(X_test, y_test)
print(f"fp32 accuracy {evaluate_fn(model)['accuracy']:.4f}, {jc.model_bytes(model):,} bytes")

# %% [markdown]
# ## Static int8 on the digits CNN
# Calibrate on a few hundred training images with each observer; look at accuracy, size and speed
# at batch 1 and at batch 256.

# %%
for observer in ("minmax", "moving_average", "histogram"):
    q, report = jc.compress(model, jc.StaticQuantConfig(observer=observer), data=X_train[:512], eval=evaluate_fn,
                            measure=False)
    print(f"{observer:>15}: accuracy {report.metrics_after['accuracy']:.4f}, "
          f"{report.model_bytes_before / report.model_bytes_after:.2f}x fewer bytes")
for batch in (1, 256):
    fp_ms, q_ms = paired_latency(model, q, X_test[:batch])
    print(f"batch {batch:>3}: fp32 {fp_ms:.3f} ms, int8 {q_ms:.3f} ms -> {fp_ms / q_ms:.2f}x")
report

# %% [markdown]
# At batch 1 each int8 layer spends more time converting its input and output than it saves in the
# multiply; at large batches the integer arithmetic wins. The report above lists per-layer SQNR and
# output error, so a layer that collapses is named, and `max_error=` keeps such layers in float.
#
# ## Weight-only int4: the size / fidelity dial
# Smaller groups share a scale over fewer weights: more accurate, a few more bytes.

# %%
for group in (32, 64, 128):
    q, report = jc.compress(model, jc.WeightOnlyConfig(bits=4, group_size=group), eval=evaluate_fn, measure=False)
    worst = min(r.detail.get("sqnr_db", float("inf")) for r in report.compressed_rows)
    print(f"int4, group {group:>3}: accuracy {report.metrics_after['accuracy']:.4f}, "
          f"{report.model_bytes_before / report.model_bytes_after:.2f}x fewer bytes, worst layer SQNR {worst:.1f} dB")

# %% [markdown]
# ## Dynamic int8 on a transformer: which route is fast here?
# PyTorch's eager int8 kernels are not the fastest way to run int8 on most CPUs. The int8 preset builds
# each route installed here for the whole transformer (OpenVINO with NNCF's int8 transformer preset,
# ONNX Runtime's per-channel int8, torch int8), measures them on your example inputs (time) and on the
# calibration data (cosine to fp32), and keeps the fastest within `min_cosine` (0.995), behind the same
# module interface. The choice is recorded in the plan, so a replay does not measure again. Here, the
# pretrained MiniLM encoder:

# %%
from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

encoder = load_minilm()
sentences = corpus(64)
batch = (features(encoder, sentences[:32]),)
int8, report = jc.compress(encoder, jc.DynamicQuantConfig(), example_inputs=batch, measure=False)
fp_ms, q_ms = paired_latency(encoder, int8, batch)
cos = cosine(embed(encoder, sentences), embed(int8, sentences))
print(f"batch 32: {fp_ms:.0f} ms -> {q_ms:.0f} ms ({fp_ms / q_ms:.2f}x); cosine to fp32 {float(cos.mean()):.4f} "
      f"(min {float(cos.min()):.4f})")
print(int8.encode(["still called like the original"]).shape)
for note in report.notes:
    print("-", note[:300])

# %% [markdown]
# ## Exercises
# 1. Quantize MiniLM with `DynamicQuantConfig(backend="torch")` and with `per_channel=False`: how do
#    cosine and speed change? Which layers have the lowest SQNR?
# 2. Set `max_error=0.05` on the static CNN: which layers stay in float, and what does it cost?
# 3. Time weight-only int4 with `kernel="auto"` and `kernel="dequantize"` at batch 1 and batch 32:
#    where does the packed int4 kernel pay off, and what does each row of the report say it ran?
# 4. Try `jc.HalfConfig(dtype="bfloat16")` on the CNN: accuracy, bytes, speed?

# %% [markdown]
# # One-shot methods: GPTQ, AWQ, SmoothQuant, Wanda, SparseGPT
#
# The maintained toolkits for large transformers (llm-compressor, torchao, ModelOpt, NNCF) are built
# around *one-shot* methods: no retraining, a few hundred calibration inputs, one pass layer by layer.
# Each improves on a plain method by looking at the activations the layer actually sees:
#
# | method | improves on | what it looks at | paper |
# |---|---|---|---|
# | GPTQ | round-to-nearest int4 | H = XᵀX: quantize a column, push its error onto the columns not yet quantized | Frantar et al. 2022 |
# | AWQ | round-to-nearest int4 | mean \|x\| per input channel: scale salient channels up before quantizing | Lin et al. 2023 |
# | SmoothQuant | int8 with activations | max \|x\| per channel: move activation outliers into the weights | Xiao et al. 2022 |
# | Wanda | magnitude pruning | \|w\| · ‖x‖ per input channel, compared within each output row | Sun et al. 2023 |
# | SparseGPT | magnitude pruning | H = XᵀX: prune and update the remaining weights (OBS) | Frantar & Alistarh 2023 |
#
# Here they run on the pretrained MiniLM sentence encoder, each against its plain counterpart, with the
# same calibration sentences; fidelity is the cosine of the sentence embeddings to fp32's on sentences the
# calibration did not see.

# %%
import time

import jupyter_compress as jc
from jupyter_compress.examples.minilm import corpus, cosine, embed, features, load_minilm

model = load_minilm()
calibration = corpus(64)  # plain sentences: tokenized by the model's own tokenizer
held_out = corpus(96, offset=600)
example = features(model, calibration[:32])
reference = embed(model, held_out)
results = {}


def run(label, *configs):
    start = time.perf_counter()
    new, report = jc.compress(model, jc.Plan.of(*configs), example_inputs=example, data=calibration,
                              measure=False)
    cos = cosine(reference, embed(new, held_out))
    results[label] = {"cosine": float(cos.mean()), "worst": float(cos.min()), "seconds": time.perf_counter() - start,
                      "bytes": jc.model_bytes(new)}
    print(f"{label:>28}: cosine {results[label]['cosine']:.4f} (worst sentence {results[label]['worst']:.4f}), "
          f"{results[label]['seconds']:.0f} s")
    return new, report


# %% [markdown]
# ## int4 weights: round-to-nearest, GPTQ, AWQ
# All three store the same thing: 4-bit codes with one scale per group of 128 input columns. Only the
# codes (and, for AWQ, the scaling folded into the LayerNorms) differ.

# %%
run("round-to-nearest int4 g128", jc.WeightOnlyConfig(bits=4, group_size=128))
gptq, gptq_report = run("GPTQ int4 g128", jc.GPTQConfig(bits=4, group_size=128))
run("AWQ int4 g128", jc.AWQConfig(bits=4, group_size=128))
gptq_report

# %% [markdown]
# ## Sparsity: magnitude, Wanda, SparseGPT, at 50% and at 2:4
# Half of every Linear's weights are set to zero. Magnitude keeps the largest |w|; Wanda weighs each by
# the norm of the input it multiplies; SparseGPT also updates the weights it keeps to make up for the
# ones it removes.

# %%
run("magnitude 50%", jc.PruneConfig(amount=0.5))
run("Wanda 50%", jc.WandaConfig(amount=0.5))
run("SparseGPT 50%", jc.SparseGPTConfig(amount=0.5))
run("magnitude 2:4", jc.NMConfig(n=2, m=4))
run("Wanda 2:4", jc.WandaConfig(n=2, m=4))
run("SparseGPT 2:4", jc.SparseGPTConfig(n=2, m=4))

# %% [markdown]
# ## SmoothQuant before int8
# Dynamic int8 quantizes each activation tensor with one range; a few outlier channels stretch that range
# and every other channel loses precision. SmoothQuant divides those channels down (folding the division
# into the LayerNorm before) and multiplies the weights up by the same factors: the float model is
# unchanged, the int8 model is more accurate. Here on the torch int8 route (the OpenVINO route's NNCF
# preset already smooths by itself).

# %%
run("int8 (torch)", jc.DynamicQuantConfig(backend="torch"))
run("SmoothQuant + int8 (torch)", jc.SmoothQuantConfig(), jc.DynamicQuantConfig(backend="torch"))

# %% [markdown]
# ## The table and a plot

# %%
from bokeh.io import output_notebook, show
from bokeh.models import ColumnDataSource
from bokeh.plotting import figure

output_notebook(hide_banner=True)
labels = list(results)
for label in labels:
    r = results[label]
    print(f"{label:>28} | cosine {r['cosine']:.4f} | worst {r['worst']:.4f} | {r['bytes'] / 2**20:6.1f} MiB | "
          f"{r['seconds']:4.0f} s")
source = ColumnDataSource({"label": labels, "cosine": [results[k]["cosine"] for k in labels]})
plot = figure(y_range=labels[::-1], height=360, width=640, title="MiniLM: cosine to fp32 on held-out sentences",
              x_range=(min(source.data["cosine"]) - 0.01, 1.0), tools="")
plot.hbar(y="label", right="cosine", height=0.6, source=source)
show(plot)

# %% [markdown]
# What the table shows depends on the model: on MiniLM, the one-shot methods close much of the gap that
# their plain counterparts leave, at the same bytes. Note that 50% sparsity saves no memory and no time on
# a CPU (dense kernels multiply the zeros): the size rows in each report say so, and `save(..., compact=True)`
# is where sparse storage pays off.
#
# ## Exercises
# 1. GPTQ with `act_order=True`: does quantizing the columns with the largest H diagonal first help here?
# 2. `sequential=False` computes every layer's statistics from the original model in one pass: how much
#    faster, and how much worse?
# 3. Try SmoothQuant's `alpha` at 0.3, 0.5, 0.8: where is the best trade between activations and weights?
# 4. Wanda at 60% and 70%: at which sparsity does its lead over magnitude pruning grow the most?
# 5. Time int4 (`kernel="auto"`) against fp32 at batch 1 with `jc.core.metrics_speed.paired_latency`.

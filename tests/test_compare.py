"""compare() on real models: the digits CNN (every family) and MiniLM (a short run)."""

from __future__ import annotations

import json

import pytest
import torch

from jupyter_compress import count_params, model_bytes, state_dict_hash
from jupyter_compress.core.registry import list_methods
from jupyter_compress.methods._structured_plan import structured_amount
from jupyter_compress.strategy import ComparisonTable, compare
from jupyter_compress.strategy.budget import default_candidates


@pytest.fixture(scope="module")
def digits():
    from jupyter_compress.examples.digits import train_digits_cnn

    return train_digits_cnn(epochs=5)


def test_compare_digits_measures_every_family(digits):
    model, X, y = digits
    before = state_dict_hash(model)
    table = compare(model, (X, y), budget=0.5)
    assert state_dict_hash(model) == before  # the user's model is untouched
    assert isinstance(table, ComparisonTable) and table.quality_key == "accuracy"
    rows = {r["label"]: r for r in table.rows}
    families = {m["family"] for m in list_methods()}
    assert {r["family"] for r in table.rows} == families  # every registered family has a row
    un, st = rows["pruning, unstructured"], rows["pruning, structured"]
    # measured, not quoted: the numbers are those of the kept copies
    small = table.models["pruning, structured"]
    assert st["size_ratio"] == pytest.approx(model_bytes(model) / model_bytes(small))
    assert st["params_after"] == count_params(small)
    acc = (small(X).argmax(1) == y).double().mean().item()
    assert st["quality_after"] == pytest.approx(acc, abs=1e-12)
    assert 1.6 < st["size_ratio"] < 2.6  # matched to the 0.5 budget by the amount search
    assert un["size_ratio"] == pytest.approx(1.0) and un["sparse_ratio"] > 1.5  # masks are not compression
    assert "no speedup" in un["hardware"] or "slower" in un["hardware"]
    assert un["needs_data_text"] == "no" and st["needs_data_text"] == "example inputs"
    assert all(r["compress_s"] >= 0 and r["latency_ratio"] > 0 for r in table.rows if not r.get("error"))
    text = table.to_text()
    assert "works on this hardware?" in text and "pruning, structured" in text and "CPU" in text
    page = table.to_html()
    assert page.split("</table>")[0].count("<tr>") == len(table.rows) + 1
    assert "Bokeh" not in page  # the strategy layer draws nothing itself ...
    from jupyter_compress import plotting

    page = plotting.attach_comparison_plot(table).to_html()  # ... plotting attaches the Pareto plot
    assert page.split("</table>")[0].count("<tr>") == len(table.rows) + 1
    assert "Bokeh" in page.split("</table>")[1]  # the Pareto plot follows the table
    assert type(plotting.comparison_figure(table)).__name__ == "figure"
    json.dumps(table.to_dict())
    assert len(table.points()) == len([r for r in table.rows if not r.get("error")])


def test_structured_amount_matches_the_budget(digits):
    model, X, _ = digits
    from jupyter_compress import preview
    from jupyter_compress.methods import StructuredPruneConfig

    amount = structured_amount(model, 0.3, X[:8])
    rows = preview(model, StructuredPruneConfig(amount=amount), example_inputs=X[:8]).compressed_rows
    kept = sum(r.params_after for r in rows) / sum(r.params_before for r in rows)
    assert abs(kept - 0.3) < 0.08


def test_without_inputs_structured_is_skipped_and_methods_filter(digits):
    model, X, y = digits
    labels = [c.label for c in default_candidates(model, 0.5)]
    assert "pruning, structured" in labels
    assert default_candidates(model, 0.5)[1].skip.startswith("needs example_inputs")
    table = compare(model, (X, y), methods=["prune"], budget=0.25)
    assert [r["label"] for r in table.rows] == ["pruning, unstructured"]
    assert table.models["pruning, unstructured"].head.weight.eq(0).double().mean().item() == pytest.approx(0.75)
    with pytest.raises(ValueError, match="budget"):
        compare(model, (X, y), budget=1.5)


def test_user_eval_is_the_quality_without_labels(digits):
    model, X, y = digits
    table = compare(model, X[:64], eval=lambda m: {"acc": (m(X).argmax(1) == y).double().mean().item()},
                    methods=["svd"])
    assert table.quality_key == "acc" and table.rows[0]["quality_before"] > 0.9


@pytest.mark.slow
def test_compare_minilm_short():
    from jupyter_compress.examples.minilm import corpus, features, load_minilm

    model = load_minilm()
    sentences = corpus(16)
    data = [(features(model, sentences[i:i + 8]),) for i in (0, 8)]
    table = compare(model, data, methods=["prune", "svd"], budget=0.5)
    assert table.quality_key == "cosine"
    rows = {r["label"]: r for r in table.rows}
    assert set(rows) == {"pruning, unstructured", "low-rank (svd)"}
    svd = rows["low-rank (svd)"]
    small = table.models["low-rank (svd)"]
    with torch.inference_mode():
        ref = model(data[0][0])["sentence_embedding"]
        out = small(data[0][0])["sentence_embedding"]
    cos0 = torch.nn.functional.cosine_similarity(ref.double(), out.double()).mean().item()
    assert 0 < svd["quality_after"] < 1 and abs(cos0 - svd["quality_after"]) < 0.2  # batch 0 vs both
    assert svd["size_ratio"] > 1.2 and svd["quality_before"] == pytest.approx(1.0)


def test_display_bundle_is_a_table_not_a_json_tree():
    """JupyterLab ranks its JSON tree viewer ahead of text/html, so the bundle carries no JSON (issue 18)."""
    row = {"label": "low-rank (svd)", "family": "decomposition", "needs_data_text": "no", "size_ratio": 2.0,
           "sparse_ratio": 2.0, "quality_before": 0.99, "quality_after": 0.95, "quality_change": -0.04,
           "latency_ratio": 0.8, "compress_s": 0.1, "needs_retraining": "advised: lost 0.04",
           "hardware": "yes: 1.25x faster here", "plan": "svd(rank=0.5)"}
    table = ComparisonTable([row], budget=0.5, quality_key="accuracy", hardware="cpu")
    bundle = table._repr_mimebundle_()
    assert set(bundle) == {"text/plain", "text/html"}
    assert "<table" in bundle["text/html"] and "low-rank (svd)" in bundle["text/html"]
    assert json.loads(json.dumps(table.to_dict()))["rows"][0]["label"] == "low-rank (svd)"

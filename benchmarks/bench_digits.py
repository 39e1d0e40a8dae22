"""The quickstart's digits CNN compressed by SVD 0.5 + prune 0.5: parameter ratio and accuracy change."""

from __future__ import annotations

from jupyter_compress import Plan, PruneConfig, SVDConfig, accuracy, compress
from jupyter_compress.examples.digits import train_digits_cnn

PLANS = {
    "SVD 0.5 + prune 0.5": Plan.of(SVDConfig(rank=0.5), PruneConfig(amount=0.5)),
    "SVD 0.5 only": Plan.of(SVDConfig(rank=0.5)),
    "prune 0.5 only": Plan.of(PruneConfig(amount=0.5)),
}


def rows(quick: bool) -> list[dict]:
    model, X_test, y_test = train_digits_cnn()
    out = []
    for label, plan in PLANS.items():
        _, report = compress(model, plan, eval=lambda m: {"accuracy": accuracy(m, X_test, y_test)})
        before, after = report.metrics_before["accuracy"], report.metrics_after["accuracy"]
        params = report.model_params_before / report.model_params_after
        name = f"digits CNN, {label}"
        if label == next(iter(PLANS)):
            out.append({"name": name, "figure": "params ratio", "baseline": f"{report.model_params_before:,}",
                        "value": f"{params:.2f}x", "note": f"{report.model_params_after:,} after"})
        out.append({"name": name, "figure": "accuracy change", "baseline": f"{before:.3f}",
                    "value": f"{after - before:+.3f}", "note": f"{after:.3f} after; params ratio {params:.2f}x"})
    return out

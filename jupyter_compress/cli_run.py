"""``jupyter-compress run`` / ``validate`` / ``report``: compress, evaluate, save and check thresholds, headless.

Exit codes (each means one thing, so a CI job can tell them apart):

- 0: every threshold holds (``validate``: the plan is valid);
- 1: a threshold is crossed (the report and stdout say which); a NaN metric crosses every threshold on it.
  The outputs are still written, for a look at what went wrong;
- 2: usage or input error: a bad argument or threshold, a plan file that cannot be read or is invalid, a
  ``--model`` / ``--eval`` / ``--data`` / ``--example`` / ``--train`` function that cannot be imported or
  raised, a ``--weights`` file that is not safetensors or does not fit the model, an ``--out`` folder that
  cannot be written;
- 3: internal error: an unexpected exception in jupyter_compress itself (rerun with ``--debug`` and report it);
- 130: interrupted (Ctrl-C).

Every error is one line on stderr starting ``jupyter-compress: `` (``--debug`` adds the traceback). Progress
lines before it start with ``[jupyter-compress]``; results go to stdout (``--json`` for machines).

Functions are named by the operator on the command line only (``--model``, ``--eval``, ``--train NAME=...``):
a plan names a training function by NAME, and the CLI resolves it, so a plan file never causes an import
(cli_functions.py resolves them, cli_plan.py reads the plan; their names are importable from here too).
The thresholds are checked by :func:`jupyter_compress.core.thresholds.check_thresholds`, the rule the
notebook's reports use; this module words its results for the command line.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

from .cli_common import (
    EXIT_CODES_HELP,
    EXIT_CROSSED,
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    UserCodeError,
    brief,
    short,
)
from .cli_functions import parse_train, resolve_callable, resolve_object, resolve_train, value_of
from .cli_plan import check_functions, load_plan, plan_functions
from .core import thresholds as _thresholds
from .core.jsonsafe import dumps
from .core.plan import Plan
from .core.report import Report
from .core.textvalues import parse_amount
from .errors import InvalidConfigError
from .errors import one_line as _one_line  # noqa: F401 - importable here (older callers)

__all__ = ["EXIT_OK", "EXIT_CROSSED", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_CODES_HELP",
           "UsageError", "UserCodeError", "short", "brief", "resolve_object", "parse_drop", "parse_limit",
           "parse_train", "load_plan", "plan_functions", "check_thresholds", "run_command", "validate_command",
           "report_command"]

QUIET = False  # --quiet: stderr holds the one error line only


def _progress(message: str) -> None:
    if QUIET:
        return
    print(f"[jupyter-compress] {message}", file=sys.stderr, flush=True)


# -- thresholds ------------------------------------------------------------------------------------------
def _finite_at_least_zero(value: float, text: str, flag: str, example: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise UsageError(f"{flag} {short(text)} is not a finite number, so nothing could be checked against it; "
                         f"give a finite value >= 0, e.g. {flag} {example}.")
    if value < 0:
        raise UsageError(f"{flag} must be >= 0; got {short(text)}. Give e.g. {flag} {example}.")
    return value


def parse_drop(text: str | None) -> float | None:
    """'1%' -> 0.01, '0.02' -> 0.02 (an absolute drop of the metric), read by core.textvalues.parse_amount.
    NaN, inf and negatives: UsageError."""
    if text is None:
        return None
    try:
        value = parse_amount(str(text))  # a NaN or infinite amount is no number to it
    except InvalidConfigError:
        raise UsageError(f"--max-drop must be a finite number or a percentage; got {short(text)}. Give e.g. "
                         f"--max-drop 1% or --max-drop 0.01.") from None
    return _finite_at_least_zero(value, text, "--max-drop", "1%")


def parse_limit(text: str | float | None, flag: str, example: str) -> float | None:
    """A latency or size limit: a finite number >= 0 (NaN, inf and negatives are a UsageError)."""
    if text is None:
        return None
    try:
        value = float(text)
    except (TypeError, ValueError):
        raise UsageError(f"{flag} must be a number; got {short(text)}. Give e.g. {flag} {example}.") from None
    return _finite_at_least_zero(value, str(text), flag, example)


def _crossed_words(result: dict[str, Any], metrics_before: dict[str, Any], metrics_after: dict[str, Any],
                   bytes_after: int, limit: float) -> str:
    """A core threshold result that does not hold (``ok`` False, or None: a gate does not pass unchecked),
    in the command line's words."""
    name, ok = result["name"], result["ok"]
    if name == "max_drop":
        key = result.get("metric")
        if key is None:
            return ("--max-drop needs an --eval function returning a number (or a dict of numbers); none was "
                    "measured")
        before = _thresholds.metric_number(metrics_before.get(key))
        after = _thresholds.metric_number(metrics_after.get(key))
        if ok is None or after is None or before is None:
            return (f"{key} was not measured after compression (the --eval function returned no number for it), "
                    f"so --max-drop {limit:g} cannot hold")
        if math.isnan(before) or math.isnan(after):
            return (f"{key} is NaN {_thresholds.nan_when(before, after)} compression (the --eval function "
                    f"returned NaN), so --max-drop {limit:g} cannot hold")
        return (f"{key} dropped by {before - after:.4f} (from {before:.4f} to {after:.4f}), more than --max-drop "
                f"{limit:g}")
    if name == "max_latency_ms":
        latency = result["value"]
        if latency is None:
            return "--max-latency-ms needs --example inputs to time the model"
        if math.isnan(latency):
            return f"latency is NaN (the timing failed), so --max-latency-ms {limit:g} cannot hold"
        return f"latency {latency:.3f} ms is above --max-latency-ms {limit:g}"
    return f"size {bytes_after / 1e6:.3f} MB is above --max-size-mb {limit:g}"


def check_thresholds(report: Report, *, max_drop: float | None, max_latency_ms: float | None,
                     max_size_mb: float | None) -> list[str]:
    """Plain-word descriptions of every threshold the report crosses (empty: all hold), by the core's
    :func:`~jupyter_compress.core.thresholds.check_thresholds`; a limit it could not check crosses too.

    A metric that is NaN (an eval function that returned NaN, a timing that failed) crosses any threshold
    on it: a gate must not pass on a number nothing can be compared with."""
    limits = {"max_drop": max_drop, "max_latency_ms": max_latency_ms, "max_bytes": max_size_mb}
    results = _thresholds.check_thresholds(
        _thresholds.Thresholds(max_drop=max_drop, max_latency_ms=max_latency_ms,
                               max_bytes=None if max_size_mb is None else max_size_mb * 1e6),
        metrics_before=report.metrics_before, metrics_after=report.metrics_after,
        bytes_after=report.model_bytes_after)
    return [_crossed_words(r, report.metrics_before, report.metrics_after, report.model_bytes_after,
                           limits[r["name"]]) for r in results if r["ok"] is not True]


# -- commands --------------------------------------------------------------------------------------------
def validate_command(args) -> int:
    plan = load_plan(args.plan)
    train = parse_train(getattr(args, "train", None))
    check_functions(plan, train)
    resolve_train(train)
    print(f"{args.plan}: valid plan, {len(plan.steps)} step(s): {plan.describe()}")
    return EXIT_OK


def _load_weights(model: Any, path: str, model_spec: str) -> None:
    from safetensors.torch import load_file

    _progress(f"loading weights {path}")
    try:
        state = load_file(path)
    except OSError as exc:
        raise UsageError(f"cannot read --weights {short(path)}: {exc.strerror or brief(exc)}.") from None
    except Exception as exc:  # safetensors' SafetensorError: not a safetensors file, truncated, corrupt
        raise UsageError(f"--weights {short(path)} is not a readable safetensors file ({brief(exc)}); save it "
                         f"with safetensors.torch.save_file(model.state_dict(), path).") from exc
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s), e.g. {short(missing[0])}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s), e.g. {short(unexpected[0])}")
    if shapes:
        k = shapes[0]
        problems.append(f"{len(shapes)} of another shape, e.g. {short(k)} is {list(state[k].shape)} in the file "
                        f"and {list(own[k].shape)} in the model")
    try:
        if not problems:
            model.load_state_dict(state)
    except Exception as exc:
        problems.append(brief(exc))
    if problems:
        raise UsageError(f"--weights {short(path)} does not fit the model from --model {short(model_spec)}: "
                         f"{'; '.join(problems)}.")


def _make_model(spec: str) -> Any:
    from torch import nn

    model = resolve_callable(spec, "model")()
    if not isinstance(model, nn.Module):
        raise UsageError(f"--model {short(spec)} returned a {type(model).__name__}, not a torch.nn.Module; the "
                         f"factory must return the model to compress.")
    return model


def run_command(args) -> int:
    from .core.apply import compress
    from .io import save
    from .io.artifact import ARTIFACT_NAME

    # everything that can be checked without the model first: a mistake costs no model loading
    max_drop = parse_drop(args.max_drop)
    max_latency_ms = parse_limit(args.max_latency_ms, "--max-latency-ms", "50")
    max_size_mb = parse_limit(args.max_size_mb, "--max-size-mb", "10")
    if max_drop is not None and not args.eval:
        raise UsageError("--max-drop needs --eval package.module:fn (fn(model) -> a number or a dict of numbers) "
                         "to measure the metric it limits.")
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {short(args.out)} is a file; give a folder (it is created if missing).")
    plan = load_plan(args.plan)
    train = parse_train(getattr(args, "train", None))
    check_functions(plan, train)
    functions = resolve_train(train)
    evaluate = resolve_callable(args.eval, "eval") if args.eval else None

    model = _make_model(args.model)
    if args.weights:
        _load_weights(model, args.weights, args.model)
    model.eval()
    data = value_of(args.data, "data") if args.data else None
    example = value_of(args.example, "example") if args.example else None
    _progress(f"compressing: {plan.describe()}")
    small, report = compress(model, plan, eval=evaluate, example_inputs=example, data=data, functions=functions)
    if getattr(args, "compact", None) is not None:  # the report's size rows: memory, dense and compact files
        from .io.artifact import record_artifact_sizes

        record_artifact_sizes(report, model, small, codec=args.compact)
    crossed = check_thresholds(report, max_drop=max_drop, max_latency_ms=max_latency_ms, max_size_mb=max_size_mb)
    report.notes += [f"THRESHOLD CROSSED: {c}." for c in crossed]
    try:
        out.mkdir(parents=True, exist_ok=True)
        codec = getattr(args, "compact", None)
        save(small, report, out / ARTIFACT_NAME, example_inputs=example, data=data, compact=codec is not None,
             codec=codec or "zstd")
        (out / "report.json").write_text(dumps(report.to_dict(), indent=2, default=str))
        (out / "report.html").write_text(report.to_html())
        (out / "plan.yaml").write_text(Plan.from_dict(report.plan).to_yaml())
    except OSError as exc:
        raise UsageError(f"cannot write to --out {short(args.out)}: {exc.strerror or brief(exc)}.") from None
    _progress(f"wrote {out}/model.safetensors, report.json, report.html, plan.yaml")
    code = EXIT_CROSSED if crossed else EXIT_OK
    if args.json:
        print(dumps({"ok": not crossed, "exit_code": code, "crossed": crossed, "out": str(out),
                     "report": report.to_dict()}, default=str))
    else:
        print(report.to_text())
        print("all thresholds hold" if not crossed else "thresholds crossed:\n  " + "\n  ".join(crossed))
    return code


def report_command(args) -> int:
    path = Path(args.dir)
    file = path / "report.json" if path.is_dir() else path
    if not file.exists():
        raise UsageError(f"no report.json in {short(args.dir)}; give the --out folder of a 'run'.")
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read {short(file)}: {exc.strerror or brief(exc)}.") from None
    except (ValueError, RecursionError) as exc:  # not JSON, not UTF-8, nested past the interpreter's limit
        raise UsageError(f"{short(file)} is not a report.json written by 'jupyter-compress run' "
                         f"({brief(exc)}).") from None
    try:
        report = Report.from_dict(data)
    except (TypeError, ValueError, KeyError, AttributeError, RecursionError) as exc:
        raise UsageError(f"{short(file)} is not a report.json written by 'jupyter-compress run' "
                         f"({brief(exc)}).") from None
    print({"text": report.to_text, "html": report.to_html,
           "json": lambda: dumps(report.to_dict(), indent=2, default=str)}[args.format]())
    return EXIT_OK

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
a plan names a training function by NAME, and the CLI resolves it, so a plan file never causes an import.
"""

from __future__ import annotations

import functools
import importlib
import json
import math
import numbers
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .core.jsonsafe import dumps
from .core.plan import Plan
from .core.report import Report
from .errors import CompressError, PlanError
from .errors import one_line as _one_line

__all__ = ["EXIT_OK", "EXIT_CROSSED", "EXIT_USAGE", "EXIT_INTERNAL", "EXIT_INTERRUPTED", "EXIT_CODES_HELP",
           "UsageError", "UserCodeError", "short", "brief", "resolve_object", "parse_drop", "parse_limit",
           "parse_train", "load_plan", "plan_functions", "check_thresholds", "run_command", "validate_command",
           "report_command"]

EXIT_OK, EXIT_CROSSED, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 130

EXIT_CODES_HELP = """\
exit codes:
  0    ok: every threshold holds (validate: the plan is valid)
  1    a threshold is crossed (a NaN metric crosses any threshold on it)
  2    usage or input error: arguments, thresholds, plan file, --model/--eval/--data/--example/--train
       functions (not importable, or raised), --weights file, --out folder
  3    internal error in jupyter-compress: rerun with --debug and report it
  130  interrupted (Ctrl-C)
errors are one line on stderr starting 'jupyter-compress: '; --debug adds the traceback."""

# Config fields whose value names a function the operator passes with --train (a plan never imports).
_FUNCTION_FIELDS = ("train",)
_QUOTE = 80  # longest user value quoted in a message
_BRIEF = 300  # longest exception text quoted in a message


class UsageError(CompressError):
    """A command-line or input mistake: exit code 2."""


class UserCodeError(CompressError):
    """An operator's function (``--model``, ``--eval``, ``--data``, ``--example``, ``--train``) raised: exit 2."""


def short(value: Any, limit: int = _QUOTE) -> str:
    """``repr`` of ``str(value)``, cut to ``limit`` characters (a long value is shown by its prefix)."""
    text = str(value)
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


def brief(exc: BaseException, limit: int = _BRIEF) -> str:
    """``Type: message`` on one line (whitespace collapsed), at most ``limit`` characters."""
    message = _one_line(str(exc), limit)
    return f"{type(exc).__name__}: {message}" if message else type(exc).__name__


QUIET = False  # --quiet: stderr holds the one error line only


def _progress(message: str) -> None:
    if QUIET:
        return
    print(f"[jupyter-compress] {message}", file=sys.stderr, flush=True)


# -- the operator's functions --------------------------------------------------------------------------
def resolve_object(spec: str, what: str) -> Any:
    """``pkg.module:attr.path`` -> the object; a one-line UsageError naming the spec otherwise.

    ``what`` is the option without dashes (``model``, ``eval``, ...). An exception raised while importing
    the module (the operator's code) is a UserCodeError: exit 2 as well."""
    module_name, sep, attr = str(spec).partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"--{what} must look like 'package.module:name'; got {short(spec)}.")
    try:
        obj: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"--{what} {short(spec)}: cannot import {short(module_name)} ({brief(exc)}); is its "
                         f"folder on PYTHONPATH?") from exc
    except (Exception, SystemExit) as exc:
        raise UserCodeError(f"--{what} {short(spec)}: importing {short(module_name)} raised {brief(exc)}") from exc
    for part in attr.split("."):
        try:
            found = hasattr(obj, part)
        except Exception:
            found = False
        if not part or not found:
            raise UsageError(f"--{what} {short(spec)}: {short(module_name)} has no attribute {short(part)}.")
        obj = getattr(obj, part)
    return obj


def _guarded(fn: Callable, flag: str) -> Callable:
    """``fn`` whose exceptions (and ``sys.exit``) become a one-line UserCodeError naming ``flag``."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except UserCodeError:
            raise
        except (Exception, SystemExit) as exc:
            raise UserCodeError(f"{flag} raised {brief(exc)}") from exc

    return call


def _resolve_callable(spec: str, what: str) -> Callable:
    fn = resolve_object(spec, what)
    if not callable(fn):
        raise UsageError(f"--{what} {short(spec)} is a {type(fn).__name__}, not a function.")
    return _guarded(fn, f"--{what} {short(spec)}")


def _value(spec: str, what: str) -> Any:
    """Data or example inputs: the object named, or what it returns when it is a function."""
    obj = resolve_object(spec, what)
    if callable(obj) and not hasattr(obj, "forward"):
        return _guarded(obj, f"--{what} {short(spec)}")()
    return obj


def parse_train(specs: list[str] | None) -> dict[str, str]:
    """``['NAME=pkg.mod:fn', 'pkg.mod:fn']`` -> ``{'NAME': 'pkg.mod:fn', 'pkg.mod:fn': 'pkg.mod:fn'}``."""
    out: dict[str, str] = {}
    for text in specs or ():
        name, sep, spec = text.partition("=")
        if not sep:
            name, spec = text, text
        name, spec = name.strip(), spec.strip()
        if not name or not spec:
            raise UsageError(f"--train must look like NAME=package.module:function or package.module:function; "
                             f"got {short(text)}.")
        if name in out:
            raise UsageError(f"--train {short(name)} is given twice; give each training function once.")
        out[name] = spec
    return out


def _resolve_train(specs: dict[str, str]) -> dict[str, Callable]:
    functions = {}
    for name, spec in specs.items():
        fn = resolve_object(spec, "train")
        if not callable(fn):
            raise UsageError(f"--train {short(name)}: {short(spec)} is a {type(fn).__name__}, not a function.")
        functions[name] = _guarded(fn, f"--train {short(name)}")
    return functions


# -- thresholds ------------------------------------------------------------------------------------------
def _finite_at_least_zero(value: float, text: str, flag: str, example: str) -> float:
    if math.isnan(value) or math.isinf(value):
        raise UsageError(f"{flag} {short(text)} is not a finite number, so nothing could be checked against it; "
                         f"give a finite value >= 0, e.g. {flag} {example}.")
    if value < 0:
        raise UsageError(f"{flag} must be >= 0; got {short(text)}. Give e.g. {flag} {example}.")
    return value


def parse_drop(text: str | None) -> float | None:
    """'1%' -> 0.01, '0.02' -> 0.02 (an absolute drop of the metric). NaN, inf and negatives: UsageError."""
    if text is None:
        return None
    raw = str(text).strip()
    try:
        value = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
    except ValueError:
        raise UsageError(f"--max-drop must be a number or a percentage; got {short(text)}. Give e.g. "
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


def _number(value: Any) -> float | None:
    """A metric as a float (NaN kept), or None when it is not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Real):
        return float(value)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a numpy / torch scalar
        try:
            item = value.item()
        except Exception:
            return None
        return _number(item)
    return None


def _main_metric(metrics: dict[str, Any]) -> str | None:
    numeric = [k for k, v in metrics.items() if _number(v) is not None and k != "latency_ms"]
    return "accuracy" if "accuracy" in numeric else (numeric[0] if numeric else None)


def check_thresholds(report: Report, *, max_drop: float | None, max_latency_ms: float | None,
                     max_size_mb: float | None) -> list[str]:
    """Plain-word descriptions of every threshold the report crosses (empty: all hold).

    A metric that is NaN (an eval function that returned NaN, a timing that failed) crosses any threshold
    on it: a gate must not pass on a number nothing can be compared with."""
    crossed = []
    if max_drop is not None:
        key = _main_metric(report.metrics_before)
        if key is None:
            crossed.append("--max-drop needs an --eval function returning a number (or a dict of numbers); "
                           "none was measured")
        else:
            before, after = _number(report.metrics_before[key]), _number(report.metrics_after.get(key))
            if after is None:
                crossed.append(f"{key} was not measured after compression (the --eval function returned no "
                               f"number for it), so --max-drop {max_drop:g} cannot hold")
            elif math.isnan(before) or math.isnan(after):
                when = "before and after" if math.isnan(before) and math.isnan(after) else (
                    "before" if math.isnan(before) else "after")
                crossed.append(f"{key} is NaN {when} compression (the --eval function returned NaN), so "
                               f"--max-drop {max_drop:g} cannot hold")
            else:
                drop = before - after
                if not drop <= max_drop + 1e-12:  # also an undefined drop (inf - inf)
                    crossed.append(f"{key} dropped by {drop:.4f} (from {before:.4f} to {after:.4f}), more than "
                                   f"--max-drop {max_drop:g}")
    if max_latency_ms is not None:
        latency = _number(report.metrics_after.get("latency_ms"))
        if latency is None:
            crossed.append("--max-latency-ms needs --example inputs to time the model")
        elif math.isnan(latency):
            crossed.append(f"latency is NaN (the timing failed), so --max-latency-ms {max_latency_ms:g} cannot hold")
        elif not latency <= max_latency_ms:
            crossed.append(f"latency {latency:.3f} ms is above --max-latency-ms {max_latency_ms:g}")
    if max_size_mb is not None:
        size = report.model_bytes_after / 1e6
        if not size <= max_size_mb:
            crossed.append(f"size {size:.3f} MB is above --max-size-mb {max_size_mb:g}")
    return crossed


# -- the plan ----------------------------------------------------------------------------------------
def load_plan(path: str) -> Plan:
    """The plan in ``path``, with every check ``run`` makes on the plan alone (``validate`` runs exactly
    these): readable UTF-8 text, valid YAML/JSON (safe loading: no ``!!python`` tags), known methods, valid
    config values and selectors, at least one step."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"plan file {short(path)} is not UTF-8 text; give a YAML or JSON plan.") from None
    except OSError as exc:
        raise UsageError(f"cannot read plan file {short(path)}: {exc.strerror or brief(exc)}.") from None
    plan = Plan.from_yaml(text)  # JSON is read by the YAML loader as well
    if not plan.steps:
        raise PlanError(f"plan file {short(path)} has no steps; add at least one, e.g. "
                        f"'steps: [{{method: prune, amount: 0.5}}]'.")
    return plan


def plan_functions(plan: Plan) -> list[tuple[int, str, str]]:
    """``(step number, method, NAME)`` for every function the plan names (a QAT step's ``train``)."""
    out = []
    for index, step in enumerate(plan.steps):
        for field in _FUNCTION_FIELDS:
            name = getattr(step.config, field, None)
            if isinstance(name, str) and name:
                out.append((index + 1, step.method, name))
    return out


def _check_functions(plan: Plan, given: dict[str, str]) -> None:
    for number, method, name in plan_functions(plan):
        # as the method looks it up: the NAME, or for an older plan's 'module:function' the function's name
        if name not in given and not (":" in name and name.rpartition(":")[2] in given):
            how = f"--train {name}" if ":" in name else f"--train {name}=package.module:function"
            raise UsageError(f"the plan's step {number} ({method}) names the training function {short(name)}, "
                             f"which no --train gives; add {_one_line(how, _QUOTE + 40)}.")


# -- commands --------------------------------------------------------------------------------------------
def validate_command(args) -> int:
    plan = load_plan(args.plan)
    train = parse_train(getattr(args, "train", None))
    _check_functions(plan, train)
    _resolve_train(train)
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

    model = _resolve_callable(spec, "model")()
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
    _check_functions(plan, train)
    functions = _resolve_train(train)
    evaluate = _resolve_callable(args.eval, "eval") if args.eval else None

    model = _make_model(args.model)
    if args.weights:
        _load_weights(model, args.weights, args.model)
    model.eval()
    data = _value(args.data, "data") if args.data else None
    example = _value(args.example, "example") if args.example else None
    _progress(f"compressing: {plan.describe()}")
    small, report = compress(model, plan, eval=evaluate, example_inputs=example, data=data, functions=functions)
    crossed = check_thresholds(report, max_drop=max_drop, max_latency_ms=max_latency_ms, max_size_mb=max_size_mb)
    report.notes += [f"THRESHOLD CROSSED: {c}." for c in crossed]
    try:
        out.mkdir(parents=True, exist_ok=True)
        save(small, report, out / ARTIFACT_NAME, example_inputs=example, data=data)
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

"""The ``%compress`` magics: parse, resolve names, call the core, display. No compression logic.

User mistakes become IPython ``UsageError`` (one line, no traceback) here and only here.
"""

from __future__ import annotations

import argparse
import inspect
import shlex
from collections.abc import Callable
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, line_cell_magic, line_magic, magics_class
from IPython.display import display
from traitlets import Bool, Int, Unicode

from . import __version__, options
from .core.apply import compress, compress_
from .core.inputs import attach_tokenizer, find_tokenizer
from .core.names import IPYTHON_NAMES, name_problem  # noqa: F401  (IPYTHON_NAMES: importable from here too)
from .core.plan import Plan
from .core.registry import get_method, list_methods
from .errors import CompressError, one_line, shown
from .options import OptionsError
from .options import core_message as _message

__all__ = ["CompressMagics", "load_ipython_extension"]


@magics_class
class CompressMagics(Magics):
    """%compress, %%compress, %compress_revert, %compress_report and %compress_methods.

    Settings: ``%config CompressMagics.inplace = True`` (also ``plots``, ``device``, ``default_eval``,
    ``bokeh_resources``, ``seed``).
    """

    inplace = Bool(False, help="Compress the named model in place by default (else a copy).").tag(config=True)
    seed = Int(0, help="Default seed of plans built from the magic's options.").tag(config=True)
    default_eval = Unicode("", help="Name of an eval function used when --eval is not given.").tag(config=True)
    plots = Bool(True, help="Show before/after plots with the report (when the plotting layer is installed)."
                 ).tag(config=True)
    device = Unicode("", help="Device the compressed model is placed on ('' keeps the model's device; 'cpu', "
                     "'cuda', 'cuda:1', 'mps').").tag(config=True)
    bokeh_resources = Unicode("extension", help="Where BokehJS is loaded from: 'extension' (the JupyterLab "
                              "extension ships it; the notebook keeps only the plots' data), 'inline' (in the "
                              "notebook, once, for front ends without the extension) or the http(s) URL of a "
                              "local server holding BokehJS.").tag(config=True)

    def __init__(self, shell=None, **kwargs):
        super().__init__(shell=shell, **kwargs)
        self._reports: dict[str, Any] = {}

    # -- helpers -----------------------------------------------------------
    def _resolve(self, name: str, what: str = "name", expression: bool = False) -> Any:
        ns = self.shell.user_ns
        if expression and not all(part.isidentifier() for part in name.split(".")):
            try:  # data and inputs may be written as expressions, e.g. --example X_test[:8]
                return self.shell.ev(name)
            except Exception as exc:  # noqa: BLE001 - any error in the user's expression is a usage error
                raise UsageError(f"%compress: {what} {name!r} could not be evaluated ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}).") from None
        head, *rest = name.split(".")
        if not head.isidentifier() or head not in ns:
            raise UsageError(f"%compress: {what} {name!r} is not defined in the notebook; define it or check "
                             f"the spelling.")
        obj = ns[head]
        for i, part in enumerate(rest):
            if not hasattr(obj, part):
                raise UsageError(f"%compress: {'.'.join([head, *rest[:i]])!r} has no attribute {part!r}.")
            obj = getattr(obj, part)
        return obj

    def _check_settings(self) -> None:
        """Traitlets accept any string; check the values here, where they are used."""
        if self.bokeh_resources not in ("extension", "inline") and not self.bokeh_resources.startswith(
                ("http://", "https://")):
            raise UsageError(f"%compress: CompressMagics.bokeh_resources must be 'extension', 'inline' or an http(s) "
                             f"URL; got {self.bokeh_resources!r}. Fix it with "
                             f"%config CompressMagics.bokeh_resources = 'extension'.")
        if self.device:
            import torch

            try:
                device = torch.device(self.device)
            except (RuntimeError, ValueError):
                raise UsageError(f"%compress: CompressMagics.device {self.device!r} is not a device; use 'cpu', "
                                 f"'cuda', 'cuda:N' or 'mps'.") from None
            available = {"cpu": True, "cuda": torch.cuda.is_available(),
                         "mps": getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()}
            if not available.get(device.type, False):
                raise UsageError(f"%compress: CompressMagics.device {self.device!r} is not available on this "
                                 f"machine; use 'cpu' or set it to '' to keep the model's device.")

    @staticmethod
    def _cell_for(plan: Plan, line: str) -> str:
        header = (f"# generated by jupyter_compress {__version__}; seed {plan.seed}. "
                  f"Re-running this cell reproduces the result.")
        return f"%%compress {line}\n{header}\n{plan.to_yaml()}"

    def _emit(self, cell: str) -> None:
        """Put ``cell`` below the current one (a kernel sends it to the notebook); where no frontend takes it
        (``ipython script.ipy``, a plain shell) it is also printed, under a one-line header."""
        self.shell.set_next_input(cell, replace=False)
        if getattr(self.shell, "kernel", None) is None:
            print("# --emit-config: no notebook here to insert the generated cell into; here it is:")
            print(cell)

    # -- the magics ----------------------------------------------------------
    @line_cell_magic
    def compress(self, line: str, cell: str | None = None) -> None:
        try:
            return self._compress(line, cell)
        except OptionsError as exc:  # the options' own refusals: IPython's UsageError, at this boundary
            raise UsageError(one_line(exc, options.MAX_MESSAGE)) from None
        except UsageError as exc:  # one short line, whatever value the line or the body held
            message = one_line(exc, options.MAX_MESSAGE)
            if message == str(exc):
                raise
            raise UsageError(message) from None

    def _compress(self, line: str, cell: str | None = None) -> None:
        try:
            tokens = shlex.split(line)
        except ValueError as exc:
            raise UsageError(f"%compress: cannot parse the line ({exc}).") from None
        if not tokens or tokens[0] in ("-h", "--help"):
            print(options.usage_text())
            return
        args = options.parse_args(tokens)
        body = cell if cell is not None and cell.strip() else None
        inplace = self.inplace if args.inplace is None else args.inplace
        mode = options.refuse_conflicts(args, body is not None, inplace)
        bound = self._target_name(args, mode, inplace)
        self._check_settings()
        model = self._resolve(args.model, "model")
        from torch import nn

        if not isinstance(model, nn.Module):
            raise UsageError(f"%compress: {args.model!r} is a {type(model).__name__}, not a torch.nn.Module; "
                             f"pass the name of a model.")
        eval_name = args.eval_fn or self.default_eval or None
        eval_fn = self._resolve(eval_name, "eval function") if eval_name else None
        if eval_fn is not None and not callable(eval_fn):
            raise UsageError(f"%compress: --eval {eval_name!r} is not callable; pass a function FN(model).")
        example = self._resolve(args.example, "example inputs", expression=True) if args.example else None
        data_name = args.data or args.calib
        data = self._resolve(data_name, "data", expression=True) if data_name else None
        tokenizer = self._resolve(args.tokenizer, "tokenizer") if args.tokenizer else None
        try:
            attach_tokenizer(model, tokenizer)
        except CompressError as exc:
            raise UsageError(f"%compress: --tokenizer {args.tokenizer}: {exc}") from None
        self._check_sentences(model, args, example, data)
        if mode == "--tune":
            return self._tune(args, model, eval_fn, data, example, bound)
        if mode == "--compare":
            return self._compare(args, model, eval_fn, data, example)
        if mode == "--auto":
            return self._auto(args, model, eval_fn, data, example, bound, tokens)
        try:
            if body is not None:
                plan = Plan.from_yaml(body)
                if args.seed is not None:
                    plan = Plan(plan.steps, seed=args.seed, versions=plan.versions)
            else:
                plan = options.plan_from_options(args, seed=self.seed)
            options.check_needs(plan, example, data, model)
            functions = self._plan_functions(plan)
            if inplace:
                report = compress_(model, plan, eval=eval_fn, example_inputs=example, data=data,
                                   functions=functions)
                bound = args.model
            else:
                small, report = compress(model, plan, eval=eval_fn, example_inputs=example, data=data,
                                         functions=functions)
                if self.device:
                    small.to(self.device)
                self.shell.user_ns[bound] = small
        except OptionsError:
            raise
        except CompressError as exc:
            raise UsageError(f"%compress: {_message(exc)}") from None
        self.shell.user_ns["_compress_report"] = report
        self._reports[bound] = report
        if args.emit_config:
            keep = options.strip_options(tokens, options.method_flags() | {"--emit-config"})
            line_out = " ".join(shlex.quote(t) for t in keep)
            self._emit(self._cell_for(Plan.from_dict(report.plan), line_out))
        if args.report:
            if (self.plots if args.plots is None else args.plots) and not inplace:
                self._attach_plots("attach_plots", report, model, self.shell.user_ns[bound])
            display(report)
        where = "in place" if inplace else f"as {bound!r}"
        print(f"compressed {args.model} {where}: {report.model_params_before:,} -> "
              f"{report.model_params_after:,} parameters")

    def _target_name(self, args: argparse.Namespace, mode: str | None, inplace: bool) -> str | None:
        """The name the result is bound to (None where nothing is bound); refused if it is IPython's or ours."""
        if mode == "--compare" or (mode is None and inplace):
            return None
        hidden = getattr(self.shell, "user_ns_hidden", {})
        if args.as_name is not None:
            problem = name_problem(args.as_name, hidden)
            if problem:
                raise UsageError(f"%compress: --as {args.as_name!r} {problem}; pick another name, e.g. --as small.")
            return args.as_name
        suffix = {"--tune": "_tuned", "--auto": "_auto"}.get(mode or "", "_compressed")
        default = args.model.replace(".", "_") + suffix
        problem = name_problem(default, hidden)
        if problem:
            raise UsageError(f"%compress: the default name {default!r} {problem}; name the result with --as NAME, "
                             f"e.g. --as small.")
        return default

    def _check_sentences(self, model: Any, args: argparse.Namespace, example: Any, data: Any) -> None:
        """A list of strings with no tokenizer to read it: say which option, and that --tokenizer fixes it."""
        if find_tokenizer(model) is not None:
            return
        for flag, name, value in (("--example", args.example, example),
                                  ("--data" if args.data else "--calib", args.data or args.calib, data)):
            count = options.sentences_in(value) if value is not None else 0
            if count:
                raise UsageError(f"%compress: {flag} {name} is a list of {count} strings, but "
                                 f"{type(model).__name__} has no tokenizer: add --tokenizer TOK (your tokenizer in "
                                 f"the notebook), or pass tokenized inputs.")

    def _plan_functions(self, plan: Plan) -> dict[str, Callable]:
        """The functions the plan names (the config fields its methods declare as ``function_fields``, e.g. a
        training function), taken from the notebook's own namespace: the user's notebook is the operator here.
        Never an import; a dotted path only walks attributes of an object the notebook already holds."""
        functions: dict[str, Callable] = {}
        for step in plan.steps:
            for field in get_method(step.method).function_fields:
                spec = getattr(step.config, field, None)
                if isinstance(spec, str) and spec and spec not in functions:
                    functions[spec] = self._user_function(spec, f"the plan's {step.method} {field}")
        return functions

    def _user_function(self, spec: str, what: str) -> Callable:
        named = shown(spec, 62)
        path = spec
        for prefix in ("__main__:", "__main__."):
            if path.startswith(prefix):
                path = path[len(prefix):]
                break
        parts = path.replace(":", ".").split(".")
        head, rest = parts[0], parts[1:]
        if not all(part.isidentifier() and not part.startswith("__") for part in parts) or name_problem(
                head, getattr(self.shell, "user_ns_hidden", {})):
            raise UsageError(f"%compress: {what} {named} is not the name of a function in the notebook; give "
                             f"its name, e.g. train: my_train (a function my_train(model) defined above).")
        ns = self.shell.user_ns
        if head not in ns and rest:
            raise UsageError(f"%compress: {what} {named}: {shown(head, 40)} is not defined in the notebook; a plan "
                             f"names a training function defined in the notebook (it never imports).")
        if head not in ns:
            raise UsageError(f"%compress: {what} {named} is not defined in the notebook; define "
                             f"{head}(model) (your training loop) in a cell above, or fix the name.")
        obj = ns[head]
        for i, part in enumerate(rest):
            if not hasattr(obj, part):
                raise UsageError(f"%compress: {what} {named}: {'.'.join([head, *rest[:i]])!r} has no attribute "
                                 f"{part!r}.")
            obj = getattr(obj, part)
        if not callable(obj):
            raise UsageError(f"%compress: {what} {named} is a {type(obj).__name__}, not a function; give the "
                             f"name of your training function train(model).")
        # a plan body is text: it may name the notebook's own training function, not any callable reachable
        # from it (after `import sys`, 'sys:exit' would otherwise be called with the model). So: a Python
        # function bound by a plain name in the notebook, or, through a dotted path, one defined in the notebook
        func = getattr(obj, "__func__", obj)
        defined_here = inspect.isfunction(func) and getattr(func, "__module__", None) == "__main__"
        if not (defined_here or (not rest and inspect.isfunction(func))):
            raise UsageError(f"%compress: {what} {named} is not a training function of this notebook; a plan "
                             f"names a function defined (or imported by name) in the notebook, e.g. train: my_train.")
        return obj

    def _attach_plots(self, attach: str, *args: Any) -> None:  # plotting.<attach>(*args)
        try:
            from . import plotting

            if self.bokeh_resources in ("extension", "inline"):
                plotting.configure(self.bokeh_resources)
            else:
                plotting.configure("server", root_url=self.bokeh_resources)
            getattr(plotting, attach)(*args)
        except ImportError as exc:  # bokeh missing: the report alone, and one line saying why
            missing = (exc.name or "bokeh").split(".")[0]
            print(f"(no plots: {missing} is not installed; pip install {missing}, or --no-plots to silence this)")

    def _tune(self, args, model, eval_fn, data, example, bound):
        from .notebook.cells import TUNE_TERMINAL_HINT, in_terminal

        if in_terminal(self.shell):  # no widget front end: one line, not the widgets' reprs
            print(TUNE_TERMINAL_HINT)
            return
        try:
            from .widgets.tune import tune
        except ImportError as exc:  # ipywidgets (or bokeh) missing: this feature only, in one line
            missing = (exc.name or "ipywidgets").split(".")[0]
            raise UsageError(f"%compress --tune needs {missing}, which is not installed: pip install {missing} "
                             f"(or use --emit-config to write the plan as a cell).") from None

        panel = tune(model, eval=eval_fn, data=data, example_inputs=example, name=args.model,
                     namespace=self.shell.user_ns, as_name=bound)
        self.shell.user_ns["_compress_panel"] = panel
        display(panel)

    def _compare(self, args, model, eval_fn, data, example):
        from .strategy.compare import compare

        if data is None and example is None:
            raise UsageError("%compress: --compare measures on your data: add --data NAME ((X, y) or X) or "
                             "--example X.")
        try:
            table = compare(model, data=data if data is not None else example, eval=eval_fn,
                            budget=0.5 if args.budget is None else args.budget, example_inputs=example)
        except (CompressError, ValueError) as exc:
            raise UsageError(f"%compress: --compare: {_message(exc)}") from None
        self.shell.user_ns["_compress_comparison"] = table
        if self.plots:
            self._attach_plots("attach_comparison_plot", table)
        display(table)

    def _auto(self, args, model, eval_fn, data, example, bound, tokens):
        from .strategy.auto import auto

        if eval_fn is None and data is None and example is None:
            raise UsageError("%compress: --auto needs something to measure: --eval FN, or --data / --example for "
                             "fidelity to the original.")
        try:
            result = auto(model, eval=eval_fn, data=data, example_inputs=example,
                          max_drop=0.01 if args.max_drop is None else args.max_drop,
                          objective=args.objective or "size", seed=self.seed if args.seed is None else args.seed)
        except CompressError as exc:
            raise UsageError(f"%compress: --auto: {_message(exc)}") from None
        self.shell.user_ns["_compress_auto"] = result
        if result.model is not None:
            self.shell.user_ns[bound] = result.model
            self.shell.user_ns["_compress_report"] = result.report
            self._reports[bound] = result.report
            if args.emit_config and result.plan is not None:
                # the generated cell runs the plan found: the search's own options stay off its line
                drop = options.method_flags() | options.AUTO_OPTIONS | {"--emit-config", "--as"}
                keep = options.strip_options(tokens, drop)
                line_out = " ".join(shlex.quote(t) for t in [*keep, "--as", bound])
                self._emit(self._cell_for(result.plan, line_out))
        print(repr(result))
        if args.report and result.report is not None:
            display(result.report)

    @line_cell_magic
    def compress_revert(self, line: str, cell: str | None = None) -> None:
        """%compress_revert MODEL: undo in-place compression of MODEL exactly."""
        from .core.apply import revert_

        name = line.strip()
        if not name:
            raise UsageError("%compress_revert: give the name of a model, e.g. %compress_revert model.")
        model = self._resolve(name, "model")
        try:
            revert_(model)
        except CompressError as exc:
            raise UsageError(f"%compress_revert: {exc}") from None
        print(f"reverted {name} to its original layers")

    @line_magic
    def compress_report(self, line: str) -> Any:
        """%compress_report [NAME]: show the report of the last %compress (or of the one bound to NAME)."""
        name = line.strip()
        if name:
            if name not in self._reports:
                known = ", ".join(sorted(self._reports)) or "none yet"
                raise UsageError(f"%compress_report: no report for {name!r}; reports exist for: {known}.")
            return self._reports[name]
        report = self.shell.user_ns.get("_compress_report")
        if report is None:
            raise UsageError("%compress_report: no report yet; run %compress MODEL ... first.")
        return report

    @line_magic
    def compress_methods(self, line: str) -> None:
        """%compress_methods: every registered method, with its one-line help and whether it needs data."""
        rows = list_methods()
        width = max(len(r["name"]) for r in rows)
        for r in rows:
            needs = "  [needs data / example inputs]" if r["needs_data"] else ""
            flags = [o.flag + (f" {o.choice}" if o.choice else "") for o in get_method(r["name"]).options]
            flag = f" ({', '.join(flags)})" if flags else ""
            print(f"{r['name']:<{width}}{flag}  {r['help']}{needs}")


CompressMagics.compress.__doc__ = options.usage_text()


def load_ipython_extension(ipython) -> None:
    ipython.register_magics(CompressMagics)

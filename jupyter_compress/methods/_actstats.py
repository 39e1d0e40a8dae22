"""Per-input-channel activation statistics of Linear-like layers on calibration data, and which norm layer
produced each layer's input (the activation-aware methods share this capture).

One pass over the calibration batches, with a forward pre-hook on each target layer, gathers for each input
channel j of each layer: the L2 norm ``||X_j||_2`` over all token rows, ``max |X_j|`` and ``mean |X_j|``; and,
when asked, an evenly spread sample of the input rows themselves (for searches that measure output errors).

Producers (``producers=True``): a per-channel scale ``s`` applied to a layer's weight columns (``W diag(s)``)
can be undone for free in the module that made the layer's input when that module ends with a per-channel
affine map (LayerNorm, RMSNorm, BatchNorm1d in eval: ``y = norm(x) * w + b``), so dividing its ``w`` and
``b`` by ``s`` makes the pair compute what it did. That is only exact when *every* use of the norm's output
is one of the scaled layers. Without tracing the model: forward hooks record the output tensors of the
norm-like modules (by identity); the target layers' pre-hooks match their input tensors to them; and a torch
function mode, active during the pass, sees every other operation that reads such an output (a residual
``add`` in a post-LN block, a ``.to()``, a pooling) or a model output that returns it: such a norm is not
foldable, and its consumers say why. Metadata reads (``.shape``) and ops that hand back the very same tensor
(eval-mode dropout) are not uses.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import math
import weakref
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import nn
from torch.overrides import TorchFunctionMode

from ..core.config import Constraint
from ..core.metrics import relative_error
from ..errors import CompressError
from ._common import _METADATA, LINEAR_TYPES, is_conv1d
from .quantize._common import run_batches

__all__ = ["ChannelStats", "Capture", "Group", "collect", "norm_like", "fold_into_norm", "scale_columns", "Layout",
           "pin_layout", "NOT_PINNED", "skip_reason"]

NOT_PINNED = "not changed when this step ran before (its pinned layout leaves it out)"


def skip_reason(model: nn.Module, name: str, tied: set[str], seen: set[str], layout: Any, *, tied_why: str,
                unseen_why: str) -> str | None:
    """Why a layer scaled by its activation statistics (AWQ, SmoothQuant) is left alone, or None: its parent
    reads its weight, it is tied, a pinned layout leaves it out, or it did not run on the calibration data."""
    from ._common import parent_reads_weight

    reason = parent_reads_weight(model, name)
    if reason:
        return reason
    if name in tied:
        return tied_why
    if layout is not None and name not in layout:
        return NOT_PINNED
    if name not in seen:
        return unseen_why
    return None
MULTIPLIER = "input multiplier"  # how a row's 'scales_into' starts when 1/s stays in the layer


@dataclasses.dataclass
class ChannelStats:
    """Per-input-channel statistics of one layer's inputs over all calibration token rows."""

    rows: int
    sq_sum: torch.Tensor  # float64 (in,): sum of x_j^2
    abs_sum: torch.Tensor  # float64 (in,): sum of |x_j|
    abs_max: torch.Tensor  # float32 (in,): max |x_j|

    @property
    def l2(self) -> torch.Tensor:
        """``||X_j||_2`` over every token row (float32)."""
        return self.sq_sum.sqrt().float()

    @property
    def mean_abs(self) -> torch.Tensor:
        """``mean |X_j|`` over every token row (float32)."""
        return (self.abs_sum / max(self.rows, 1)).float()


@dataclasses.dataclass
class Group:
    """Layers whose weight columns get one shared scale: those fed by the foldable norm ``norm``, or one layer
    alone (``norm`` None; ``why`` says why its scale cannot go into a producer)."""

    layers: list[str]
    norm: str | None = None
    why: str = ""


def norm_like(module: nn.Module) -> bool:
    """A leaf module holding a 1-D float ``weight`` (and a ``bias`` of the same size or none), not a weight
    layer: a candidate producer whose per-channel affine output a scale may be folded into (checked on data by
    :func:`fold_into_norm`)."""
    if isinstance(module, (*LINEAR_TYPES, nn.Embedding)) or next(module.children(), None) is not None:
        return False
    weight = module._parameters.get("weight")
    bias = module._parameters.get("bias")
    return (weight is not None and weight.dim() == 1 and weight.is_floating_point()
            and (bias is None or (bias.dim() == 1 and bias.shape == weight.shape)))


def _tensors(value: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        yield value
    elif depth < 4 and isinstance(value, (tuple, list)):
        for v in value:
            yield from _tensors(v, depth + 1)
    elif depth < 4 and isinstance(value, Mapping):
        for v in value.values():
            yield from _tensors(v, depth + 1)


class _Uses(TorchFunctionMode):
    """Sees every torch function call during the pass; reports reads of a tracked norm output made outside
    the target layer it was given to."""

    def __init__(self, capture: Capture):
        super().__init__()
        self.capture = capture

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        cap = self.capture
        if cap.paused or not cap.outputs or func in _METADATA:
            return func(*args, **kwargs)
        tracked = [(t, n) for t in _tensors((args, kwargs))
                   if (n := cap.norm_of(t)) is not None and not cap.inside(t)]
        result = func(*args, **kwargs)
        for tensor, norm in tracked:
            if result is not tensor:  # eval-mode dropout returns its input itself: not a use
                cap.escape(norm, f"its output is also read by {getattr(func, '__name__', str(func))}")
        return result


class Capture:
    """What one calibration pass saw (see the module docstring): ``stats``, ``rows``, and the producers."""

    def __init__(self, names: list[str]):
        self.names = list(names)
        self.stats: dict[str, ChannelStats] = {}
        self.rows: dict[str, torch.Tensor] = {}
        self.fed_by: dict[str, set[str | None]] = {n: set() for n in names}  # layer -> producers seen
        self.consumers: dict[str, list[str]] = {}  # norm -> target layers that read its output
        self.escapes: dict[str, str] = {}  # norm -> why it cannot take a scale
        self.probes: dict[str, torch.Tensor] = {}  # norm -> a few of its input rows (fold check)
        self.outputs: dict[int, tuple[weakref.ref, str]] = {}  # id(norm output) -> (its tensor, norm name)
        self.stack: list[torch.Tensor] = []  # inputs of the target layers now running
        self.paused = False

    def norm_of(self, tensor: torch.Tensor) -> str | None:
        entry = self.outputs.get(id(tensor))
        return entry[1] if entry is not None and entry[0]() is tensor else None

    def inside(self, tensor: torch.Tensor) -> bool:
        return any(t is tensor for t in self.stack)

    def escape(self, norm: str, why: str) -> None:
        self.escapes.setdefault(norm, why)

    def groups(self, eligible: list[str], layout: dict[str, str] | None = None) -> list[Group]:
        """The layers of ``eligible`` (in order) in groups: one per foldable norm (all its consumers eligible
        and fed by it alone, its output read by nothing else), then each remaining layer alone.

        ``layout`` (a pinned step, see :func:`pin_layout`): only its layers, each where it says ('norm' or
        'multiplier'); a layer pinned to a norm that cannot take its scale now is a CompressError."""
        if layout is not None:
            groups = self.groups([n for n in eligible if n in layout])
            out = []
            for g in groups:
                wanted = {layout[n] for n in g.layers}
                if g.norm is None and "norm" in wanted:
                    raise CompressError(f"This step was pinned with the scale of {g.layers[0]} folded into a norm "
                                        f"layer, but now {g.why}; run it unpinned (layout=None).")
                if g.norm is not None and wanted == {"multiplier"}:
                    out += [Group([n], None, "pinned so when this step ran before") for n in g.layers]
                elif g.norm is not None and len(wanted) > 1:
                    raise CompressError(f"This step's pinned layout splits the layers after {g.norm}; run it "
                                        f"unpinned (layout=None).")
                else:
                    out.append(g)
            return out
        ok = set(eligible)
        folds: dict[str, Group] = {}
        alone: dict[str, Group] = {}
        for name in eligible:
            producers = self.fed_by.get(name, set())
            norm = next(iter(producers)) if len(producers) == 1 else None
            if norm is None:
                why = ("its input is made by different modules on different calls" if len(producers) > 1
                       else "its input is not the output of a norm layer")
                alone[name] = Group([name], None, why)
                continue
            users = self.consumers.get(norm, [])
            blockers = [u for u in users if u not in ok or self.fed_by.get(u) != {norm}]
            if norm in self.escapes or blockers:
                why = self.escapes.get(norm) or (f"its output also feeds {blockers[0]}, which is not scaled "
                                                 f"with it")
                alone[name] = Group([name], None, f"its input comes from {norm}, but {why}")
                continue
            folds.setdefault(norm, Group([], norm)).layers.append(name)
        order = {n: i for i, n in enumerate(eligible)}
        out = sorted([*folds.values(), *alone.values()], key=lambda g: order[g.layers[0]])
        return out


def _rows_2d(x: torch.Tensor) -> torch.Tensor:
    return x.detach().reshape(-1, x.shape[-1]).float()


def _spread(rows: torch.Tensor, k: int) -> torch.Tensor:
    """``k`` rows evenly spread over ``rows`` (all of them when there are fewer)."""
    if rows.shape[0] <= k:
        return rows
    index = torch.linspace(0, rows.shape[0] - 1, k).round().long()
    return rows[index]


@contextlib.contextmanager
def _paused(capture: Capture) -> Iterator[None]:
    before, capture.paused = capture.paused, True
    try:
        yield
    finally:
        capture.paused = before


def collect(model: nn.Module, names: list[str], batches: list[Any], example_inputs: Any = None, *,
            keep_rows: int = 0, producers: bool = False) -> Capture:
    """Run ``model`` on ``batches`` (eval mode, no grad) and return the :class:`Capture` of ``names``.

    ``keep_rows``: also keep about that many input rows per layer, evenly spread over the batches.
    ``producers``: also find which norm layer made each layer's input, and whether a scale can be folded
    into it (see the module docstring)."""
    cap = Capture(names)
    per_batch = math.ceil(keep_rows / max(len(batches), 1)) if keep_rows else 0
    kept: dict[str, list[torch.Tensor]] = {n: [] for n in names}
    handles = []

    def pre_hook(name: str):
        def hook(module, args):
            x = args[0] if args and isinstance(args[0], torch.Tensor) else None
            if producers:
                cap.stack.append(x)  # popped by the forward hook, whatever the input
            if x is None or not x.is_floating_point():
                return
            with _paused(cap):
                if producers:
                    norm = cap.norm_of(x)
                    cap.fed_by[name].add(norm)
                    if norm is not None and name not in cap.consumers.setdefault(norm, []):
                        cap.consumers[norm].append(name)
                rows = _rows_2d(x)
                old = cap.stats.get(name)
                sq, ab, mx = (rows * rows).sum(0, dtype=torch.float64), rows.abs().sum(0, dtype=torch.float64), \
                    rows.abs().amax(0)
                if old is None:
                    cap.stats[name] = ChannelStats(rows.shape[0], sq, ab, mx)
                else:
                    old.rows += rows.shape[0]
                    old.sq_sum += sq
                    old.abs_sum += ab
                    torch.maximum(old.abs_max, mx, out=old.abs_max)
                if per_batch:
                    kept[name].append(_spread(rows, per_batch).clone())
        return hook

    def post_hook(module, args, output):
        if cap.stack:
            cap.stack.pop()

    def norm_hook(name: str):
        def hook(module, args, output):
            if isinstance(output, torch.Tensor):
                with _paused(cap):
                    cap.outputs[id(output)] = (weakref.ref(output), name)
                    if name not in cap.probes and args and isinstance(args[0], torch.Tensor) and args[0].dim():
                        cap.probes[name] = args[0].detach().reshape(-1, args[0].shape[-1])[:64].clone()
        return hook

    def model_hook(module, args, output):
        for t in _tensors(output):
            norm = cap.norm_of(t)
            if norm is not None:
                cap.escape(norm, "its output is returned by the model")

    for name in names:
        layer = model.get_submodule(name)
        handles.append(layer.register_forward_pre_hook(pre_hook(name)))
        if producers:
            handles.append(layer.register_forward_hook(post_hook))
    if producers:
        for name, module in model.named_modules():
            if name and name not in names and norm_like(module):
                handles.append(module.register_forward_hook(norm_hook(name)))
        handles.append(model.register_forward_hook(model_hook))
    try:
        with (_Uses(cap) if producers else contextlib.nullcontext()):
            run_batches(model, batches, names, example_inputs)
    finally:
        for h in handles:
            h.remove()
        cap.outputs.clear()
        cap.stack.clear()
    for name, parts in kept.items():
        if parts:
            cap.rows[name] = _spread(torch.cat(parts), keep_rows)
    return cap


def scale_columns(layer: nn.Module, scale: torch.Tensor) -> nn.Module:
    """A copy of the Linear-like ``layer`` with weight column j (input channel j) multiplied by ``scale[j]``
    (a transformers ``Conv1D``, weight (in, out): row j)."""
    new = copy.deepcopy(layer)
    s = scale.to(new.weight.dtype)
    with torch.no_grad():
        new.weight.mul_(s[:, None] if is_conv1d(new) else s[None, :])
    return new


def fold_into_norm(norm: nn.Module, inverse: torch.Tensor, probe: torch.Tensor | None,
                   tolerance: float = 1e-4) -> nn.Module | None:
    """A copy of ``norm`` whose output is ``norm``'s times ``inverse`` (per last-dim channel): its weight and
    bias multiplied by ``inverse``. None when that does not hold on ``probe`` (a few of its inputs seen in
    calibration) within ``tolerance`` (relative): a norm that is not a plain per-channel affine map
    (``(1 + w)`` parametrisations, a channel dim that is not the last)."""
    if probe is None:
        return None
    new = copy.deepcopy(norm)
    with torch.no_grad():
        new.weight.mul_(inverse.to(new.weight.dtype))
        if getattr(new, "bias", None) is not None:
            new.bias.mul_(inverse.to(new.bias.dtype))
        try:
            ref = norm(probe)
            out = new(probe)
        except (RuntimeError, ValueError, TypeError):
            return None
        if not isinstance(ref, torch.Tensor) or ref.shape[-1:] != inverse.shape:
            return None
        return new if relative_error(ref.float() * inverse.float(), out.float()) <= tolerance else None


class Layout(Constraint):
    """None, or a mapping {layer name: 'norm' or 'multiplier'} (where each layer's 1/s went)."""

    def check(self, value: Any) -> bool:
        if value is None:
            return True
        return isinstance(value, dict) and len(value) <= 100_000 and all(
            isinstance(k, str) and 0 < len(k) <= 1000 and v in ("norm", "multiplier") for k, v in value.items())

    def describe(self) -> str:
        return "None or a mapping {layer name: 'norm' or 'multiplier'}"

    def normalize(self, value: Any) -> Any:
        return None if value is None else {str(k): str(v) for k, v in value.items()}


def pin_layout(step: dict[str, Any], rows: list[Any]) -> dict[str, Any]:
    """The step pinned to where each changed layer's 1/s went (from its rows' ``scales_into``): replayed on
    other data (a saved model's synthetic inputs) it changes the same layers the same way, so the saved
    weights fit, whatever the data would choose."""
    layout = {r.name: "multiplier" if str(r.detail["scales_into"]).startswith(MULTIPLIER) else "norm"
              for r in rows if "scales_into" in r.detail}
    return {**step, "layout": layout}

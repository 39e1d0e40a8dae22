"""``distill(student, teacher, data)``: train a student to mimic a teacher, observably and interruptibly.

The loop keeps a copy of the best weights (by the validation metric; without validation, the last whole
epoch's), so Ctrl-C, early stopping or a worse last epoch all return the best student seen. It trains to
convergence: ``epochs`` is a cap, and training stops once the watched quantity (the validation metric with
``val_data``, else the mean training loss) has not improved by a relative ``REL_TOL`` for ``patience``
epochs; the report warns when the cap was reached with the training loss still falling. Weights are
only ever snapshotted between optimizer steps, never half-updated. The teacher runs in eval mode under
``no_grad`` and is never changed. A seed fixes shuffling, projection initialisation and dropout.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from ...core.metrics import eval_mode, primary_output
from ...core.report import Report
from ...errors import CompressError, InvalidConfigError
from ._attention import QKVTap, attention_loss, attention_pairs, heads_of, padding_mask
from ._config import DistillConfig
from ._data import Source, call, model_device, to_device
from ._features import Tap, feature_pairs, make_projection, parameters
from ._report import build_report
from ._teacher import METRICS, OUT, TeacherOutputs, Validator, qkv_key
from .losses import check_shapes, choose_loss, output_loss

__all__ = ["distill", "REL_TOL"]

REL_TOL = 1e-3  # an epoch "improves" the training loss when it lowers it by more than this fraction


def _snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _tokenizer(model: nn.Module) -> Any:
    return getattr(model, "preprocess", None) or getattr(model, "tokenize", None)


def _progress(total: int | None, enabled: bool) -> Any:
    if not enabled:
        return None
    try:
        from ...core.progress import progress_bar

        return progress_bar(total, desc="distill", unit="batch")  # closed and cleared when training ends
    except ImportError:  # tqdm is a dependency, but a missing bar must not stop training
        return None


def distill(
    student: nn.Module, teacher: nn.Module, data: Any, *, epochs: int = DistillConfig.epochs,
    lr: float = DistillConfig.lr,
    T: float = DistillConfig.T, alpha: float = DistillConfig.alpha, loss: str = "auto",
    features: dict | None = None, feature_weight: float = 1.0, attention: dict | None = None,
    attention_weight: float = 1.0, output_weight: float = 1.0,
    batch_size: int = 64, weight_decay: float = 0.0, schedule: str = DistillConfig.schedule,
    warmup: float = DistillConfig.warmup, keep_zeros: bool = True, val_data: Any = None,
    metric: str | Callable[[nn.Module], Any] | None = None, patience: int | None = DistillConfig.patience,
    min_delta: float = 0.0, seed: int = 0, inplace: bool = False, cache_teacher: bool = True,
    progress: bool = True, on_epoch: Callable[[list[dict]], Any] | None = None,
    on_step: Callable[[dict], Any] | None = None,
) -> tuple[nn.Module, Report]:
    """Train ``student`` to mimic ``teacher`` on ``data``; return ``(best student, report)``.

    ``student`` is copied and left unchanged unless ``inplace=True`` (then it is trained and ends holding
    the best weights; an error restores its starting weights). ``data``: (X, y) or X tensors / arrays, a
    list of batches, a DataLoader, or a list of sentences for a model that tokenizes; labels are optional.
    ``loss``: 'kd' (T, alpha), 'mse', 'cosine' or 'auto'. ``keep_zeros`` keeps pruned weights at zero.
    ``features={teacher layer: student layer}`` adds feature matching; ``attention={teacher attention
    module: student attention module}`` adds MiniLM's attention-distribution and value-relation matching. ``val_data`` + ``metric`` ('accuracy', 'agreement', 'cosine', 'loss' or a
    callable ``metric(model) -> number``, higher is better) pick the best epoch. ``epochs`` is a cap:
    training stops when the validation metric (without ``val_data``: the mean training loss, by a relative
    1e-3) has not improved for ``patience`` epochs (0 or None: never early). ``schedule='linear'`` warms
    the learning rate up over the first ``warmup`` fraction of all ``epochs``' steps, then decays it to 0.
    ``on_epoch(history)`` is called after each epoch and ``on_step(info)`` after each batch; Ctrl-C
    returns the best student so far, with the report saying it was interrupted.
    """
    config = DistillConfig(epochs=epochs, lr=lr, T=T, alpha=alpha, loss=loss, batch_size=batch_size,
                           weight_decay=weight_decay, features=dict(features) if isinstance(features, dict)
                           else None, feature_weight=feature_weight, output_weight=output_weight,
                           keep_zeros=keep_zeros, patience=0 if patience is None else patience,
                           schedule=schedule, warmup=warmup, attention=dict(attention) if isinstance(
                               attention, dict) else None, attention_weight=attention_weight)
    for name, model in (("student", student), ("teacher", teacher)):
        if not isinstance(model, nn.Module):
            raise CompressError(f"distill needs a torch.nn.Module as the {name}; got a {type(model).__name__}.")
    if student is teacher:
        raise InvalidConfigError("The student is the teacher itself; pass a copy (or make_student(teacher)).")
    if isinstance(metric, str) and metric not in METRICS:
        raise InvalidConfigError(f"The 'metric' parameter of distill must be one of {', '.join(METRICS)} or a "
                                 f"callable. Got {metric!r} instead.")
    if isinstance(metric, str) and val_data is None:
        raise InvalidConfigError(f"metric={metric!r} is measured on validation data: pass val_data=(X, y).")
    work = student if inplace else copy.deepcopy(student)
    run = _Run(work, teacher, config, data, val_data, metric, features, cache_teacher, attention)
    return run.train(config.patience, min_delta, seed, progress, on_epoch, on_step)


class _Run:
    def __init__(self, student, teacher, config, data, val_data, metric, features, cache, attention=None):
        self.student, self.teacher, self.config, self.metric = student, teacher, config, metric
        self.device = model_device(student)
        tokenize = _tokenizer(student) or _tokenizer(teacher)
        self.source = Source(data, config.batch_size, tokenize=tokenize)
        self.val = None if val_data is None else Source(val_data, config.batch_size, tokenize=tokenize,
                                                        name="val_data")
        self.pairs = feature_pairs(features, teacher, student)
        self.apairs = attention_pairs(attention, teacher, student)
        self.heads = [heads_of(teacher, t) for t, _ in self.apairs]
        tlayers, tatt = [t for t, _ in self.pairs], [t for t, _ in self.apairs]
        self.tout = TeacherOutputs(teacher, tlayers, self.device, cache and self.source.cacheable, tatt)
        self.vout = TeacherOutputs(teacher, tlayers, self.device, cache and self.val is not None
                                   and self.val.cacheable)
        self.n = len(self.source.X) if self.source.X is not None else None
        self.kind, self.projections, self.notes = config.loss, nn.ModuleDict(), []
        self.falling = False  # whether the last epoch still lowered the training loss (by > REL_TOL)

    def _setup(self, key: Any, inputs: Any, targets: Any) -> None:
        """From the first batch: the loss kind, shape checks, and projections for feature pairs."""
        t = self.tout.outputs(key, inputs, self.n)
        if self.kind == "auto":
            self.kind, why = choose_loss(self.tout.first_raw, t[OUT], targets)
            self.notes.append(f"Loss {self.kind!r} chosen automatically: {why}.")
        with eval_mode(self.student), torch.no_grad(), Tap(self.student, [s for _, s in self.pairs]) as feats:
            s = primary_output(call(self.student, to_device(inputs, self.device)))
        if self.config.output_weight > 0:
            check_shapes(s, t[OUT])
        for pair in self.pairs:
            proj = make_projection(feats[pair[1]], t[pair[0]], pair)
            self.projections[str(len(self.projections))] = proj.to(self.device)

    def _loss(self, key: Any, inputs: Any, targets: Any) -> torch.Tensor:
        t = self.tout.outputs(key, inputs, self.n)
        inputs = to_device(inputs, self.device)
        targets = None if targets is None else to_device(targets, self.device)
        with Tap(self.student, [s for _, s in self.pairs]) as feats, \
                QKVTap(self.student, [s for _, s in self.apairs]) as qkv:
            s = primary_output(call(self.student, inputs))
        total = s.new_zeros(())
        for (tn, sn), heads in zip(self.apairs, self.heads):
            teacher_qkv = tuple(t[qkv_key(tn, i)] for i in range(3))
            if qkv[sn][0].shape[:2] != teacher_qkv[0].shape[:2]:
                raise InvalidConfigError(f"Attention matching needs the same tokens on both sides: student "
                                         f"{sn!r} saw {tuple(qkv[sn][0].shape[:2])}, teacher {tn!r} "
                                         f"{tuple(teacher_qkv[0].shape[:2])}.")
            total = total + self.config.attention_weight * attention_loss(
                qkv[sn], teacher_qkv, heads, padding_mask(inputs, qkv[sn][0]))
        if self.config.output_weight > 0:
            total = total + self.config.output_weight * output_loss(self.kind, s, t[OUT], targets,
                                                                    T=self.config.T, alpha=self.config.alpha)
        for i, (tn, sn) in enumerate(self.pairs):
            mapped = self.projections[str(i)](feats[sn])
            total = total + self.config.feature_weight * F.mse_loss(mapped.float(), t[tn].float())
        return total

    def _validator(self) -> Validator | None:
        metric = self.metric
        if metric is None and self.val is not None:
            if self.val.labelled and not self.val.y.is_floating_point():
                metric = "accuracy"
            else:
                metric = "agreement" if self.kind == "kd" else "cosine"
        if metric is None:
            return None
        if metric == "accuracy" and self.val.X is not None and not self.val.labelled:
            raise InvalidConfigError("metric='accuracy' needs labelled val_data=(X, y).")
        return Validator(metric, self.val, self.vout, self.kind, self.config.T, self.config.alpha)

    def _scheduler(self, optimizer: torch.optim.Optimizer, per_epoch: int | None) -> Any:
        """None for a constant rate; a linear warmup then a linear decay to 0 over ``epochs`` otherwise."""
        if self.config.schedule == "constant":
            return None
        if not per_epoch:
            raise InvalidConfigError("schedule='linear' needs to know the number of steps: give data with a "
                                     "length (arrays, a list of batches, a DataLoader with __len__).")
        total = per_epoch * self.config.epochs
        warm = int(self.config.warmup * total)

        def factor(step: int) -> float:
            if step < warm:
                return (step + 1) / warm
            return max(0.0, (total - step) / max(1, total - warm))

        return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

    def train(self, patience, min_delta, seed, progress, on_epoch, on_step) -> tuple[nn.Module, Report]:
        start = time.perf_counter()
        flags = {m: m.training for m in self.student.modules()}
        initial = _snapshot(self.student)
        best_state, best_epoch, best_value = initial, 0, None
        history: list[dict] = []
        status, step, bar, validator, teacher_value = "finished", 0, None, None, None
        cuda = [self.device.index or 0] if self.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=cuda), eval_mode(self.teacher), torch.enable_grad():
                torch.manual_seed(seed)
                generator = torch.Generator().manual_seed(seed)
                first = next(iter(self.source.epoch(None)))
                self._setup(*first)
                validator = self._validator()
                if validator is not None:
                    best_value = validator(self.student)
                    teacher_value = validator(self.teacher) if callable(self.metric) or validator.name in (
                        "accuracy", "loss") else 1.0
                    history.append({"epoch": 0, validator.name: best_value})
                params = [p for p in self.student.parameters() if p.requires_grad]
                if not params:
                    raise InvalidConfigError("The student has no trainable parameters (requires_grad is False "
                                             "everywhere); unfreeze some layers to distil.")
                # a zero in a weight matrix / kernel is pruning's doing (dense training never lands on 0.0);
                # 1-D tensors are left out: fresh BatchNorm / LayerNorm biases start at exactly zero
                masks = [(p, p != 0) for p in params if self.config.keep_zeros and p.dim() >= 2 and
                         not bool(p.all())]
                optimizer = torch.optim.AdamW(params + list(parameters(self.projections)), lr=self.config.lr,
                                              weight_decay=self.config.weight_decay)
                per_epoch = len(self.source)
                scheduler = self._scheduler(optimizer, per_epoch)
                bar = _progress(per_epoch * self.config.epochs if per_epoch else None, progress)
                stale, best_loss = 0, None
                for epoch in range(1, self.config.epochs + 1):
                    self.student.train()
                    epoch_start, losses = time.perf_counter(), []
                    for key, inputs, targets in self.source.epoch(generator):
                        value = self._loss(key, inputs, targets)
                        optimizer.zero_grad(set_to_none=True)
                        value.backward()
                        optimizer.step()
                        if scheduler is not None:
                            scheduler.step()
                        with torch.no_grad():
                            for p, keep in masks:
                                p.masked_fill_(~keep, 0)  # +0.0, not mul_'s -0.0 (see schedule.py)
                        step += 1
                        losses.append(float(value.detach()))
                        if bar is not None:
                            bar.update(1)
                            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.4g}", refresh=False)
                        if on_step is not None:
                            on_step({"epoch": epoch, "step": step, "loss": losses[-1]})
                    self.student.eval()
                    record = {"epoch": epoch, "loss": sum(losses) / len(losses)}
                    self.falling = best_loss is None or record["loss"] < best_loss - REL_TOL * abs(best_loss)
                    best_loss = record["loss"] if best_loss is None else min(best_loss, record["loss"])
                    if validator is None:
                        best_state, best_epoch = _snapshot(self.student), epoch
                        stale = 0 if self.falling else stale + 1
                    else:
                        record[validator.name] = validator(self.student)
                        if validator.better(record[validator.name], best_value, min_delta):
                            best_state, best_epoch, best_value, stale = _snapshot(self.student), epoch, \
                                record[validator.name], 0
                        else:
                            stale += 1
                        if bar is not None:
                            bar.set_postfix(epoch=epoch, loss=f"{record['loss']:.4g}",
                                            **{validator.name: f"{record[validator.name]:.4g}"})
                    record["seconds"] = time.perf_counter() - epoch_start
                    history.append(record)
                    if on_epoch is not None:
                        on_epoch(list(history))
                    if patience and stale >= patience:
                        watched = (f"no better {validator.name}" if validator is not None else
                                   f"the training loss improved by less than {REL_TOL:.1%}")
                        status = f"stopped early at epoch {epoch}: {watched} for {patience} epochs"
                        break
        except KeyboardInterrupt:
            status = f"interrupted at step {step} (epoch {history[-1]['epoch'] + 1 if history else 1})"
        except BaseException:
            self.student.load_state_dict(initial)
            _restore(flags)
            raise
        finally:
            if bar is not None:
                bar.close()
        self.student.load_state_dict(best_state)
        _restore(flags)
        report = build_report(self, history, status, best_epoch, best_value, teacher_value, validator, seed,
                              time.perf_counter() - start)
        return self.student, report


def _restore(flags: dict[nn.Module, bool]) -> None:
    for module, flag in flags.items():
        module.training = flag


"""One artifact file: ``*.safetensors`` holding the weights, with the manifest (plan, report, versions,
fingerprints, tensor digest) as JSON in the safetensors metadata.

One file so that a save is atomic: it is written to a temporary file in the same folder, flushed
and renamed over the old one, so a process killed mid-save leaves the previous artifact intact (and its
temporary file is removed by the next save in that folder).

An artifact is untrusted input: ``load`` never imports a module or calls a function named in it (the plan
is replayed by the registry's own methods, a QAT step without its training), the digest covers the whole
manifest as well as the weights, and every field is checked (types, sizes, depth) before use.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..core.apply import compress_, forget_undo, replay_copy
from ..core.jsonsafe import dumps
from ..core.plan import Plan, current_versions
from ..core.registry import get_method
from ..core.report import Report
from ..errors import CompressError, SchemaVersionError, shown
from .compact import CODECS, decode, encode
from .inputs import input_spec, synth_inputs

__all__ = ["ARTIFACT_SCHEMA", "save", "load", "load_tensors", "read_manifest", "artifact_sizes",
           "record_artifact_sizes"]

ARTIFACT_SCHEMA = 2  # 2: the digest covers the manifest too
_KEY = "jupyter_compress"
_COMPACT_KEY = "jupyter_compress.compact"  # the layout of a compact payload (io/compact.py)
_PAYLOAD = "__jupyter_compress_compact__"  # the one tensor of a compact artifact: its payload, uint8
_MAX_MANIFEST_CHARS = 16_000_000  # a manifest holds a plan and a report: a few hundred KB for big models


def _digest(tensors: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).contiguous().view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _manifest_digest(tensor_digest: str, manifest: dict[str, Any]) -> str:
    """sha256 of the weights' digest and the manifest (without this digest), in canonical JSON."""
    body = {k: v for k, v in manifest.items() if k != "sha256"}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    return hashlib.sha256(f"{tensor_digest}|{text}".encode()).hexdigest()


def _clean_orphans(folder: Path, name: str) -> None:
    """Remove temporary files left by saves that were killed (their process is gone)."""
    for tmp in folder.glob(f".{name}.*.tmp"):
        parts = tmp.name[len(name) + 2:].split(".")
        try:
            pid = int(parts[0])
        except (ValueError, IndexError):
            continue
        if pid == os.getpid():
            continue
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except OSError:  # alive under another user, or no permission to ask: leave it
            continue


def fingerprint(data: Any) -> str | None:
    """A short sha256 of tensors / arrays in ``data`` (calibration or training data), or None."""
    if data is None:
        return None
    h = hashlib.sha256()
    items = data if isinstance(data, (tuple, list)) else [data]
    seen = False
    for item in items:
        if hasattr(item, "shape") and hasattr(item, "dtype"):
            t = torch.as_tensor(item).detach().cpu().contiguous()
            h.update(f"{t.dtype}|{tuple(t.shape)}|".encode())
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
            seen = True
    return h.hexdigest()[:16] if seen else None


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    out = {}
    for name, value in model.state_dict().items():
        if not isinstance(value, torch.Tensor):
            raise CompressError(f"state_dict entry {name!r} is a {type(value).__name__}, not a tensor; this "
                                f"model cannot be saved as safetensors.")
        # clone: safetensors refuses tensors that share storage (tied weights are re-tied by load_state_dict)
        out[name] = value.detach().cpu().contiguous().clone()
    return out


def _replayable(report: Report) -> dict[str, Any]:
    """The report's plan, with each step whose method declares ``pin`` pinned to what it chose.

    A step that picks from the weights (structured pruning's global scope picks per-layer counts) could
    pick otherwise when replayed on a fresh model; its method's ``pin(step, rows)`` turns the step and its
    report rows into one that any weights replay the same. Only a method with exactly one step in the plan
    is pinned: with several, the rows cannot be told apart by step.
    """
    plan = json.loads(json.dumps(report.plan, default=str))
    by_method: dict[str, list[int]] = {}
    for index, step in enumerate(plan["steps"]):
        by_method.setdefault(get_method(step["method"]).name, []).append(index)
    for name, indexes in by_method.items():
        method = get_method(name)
        if method.pin is not None and len(indexes) == 1:
            rows = [row for row in report.compressed_rows if row.method == method.name]
            plan["steps"][indexes[0]] = method.pin(plan["steps"][indexes[0]], rows)
    return plan


def save(model: nn.Module, report_or_plan: Report | Plan | Any, path: str | os.PathLike, *,
         example_inputs: Any = None, data: Any = None, compact: bool = False, codec: str = "zstd") -> Path:
    """Write ``model``'s weights and the plan that made it to ``path`` (a ``.safetensors`` file).

    ``example_inputs`` (or only their shapes) are recorded so :func:`load` can re-trace the model;
    ``data`` is fingerprinted, not stored.

    ``compact=True``: the weights are stored as small as they are (see :mod:`jupyter_compress.io.compact`):
    each tensor dense, as a bitmap of its non-zeros or as relative indices, whichever is smallest, integer
    codes (int8 / int4, cluster indices) at the bits their range needs, and the whole payload through
    ``codec``: ``'zstd'`` (smallest) or ``'lz4'`` (fastest to load). Still one safetensors file with the same
    manifest and digest as a dense save; :func:`load` reads either.
    """
    from safetensors.torch import save_file

    if isinstance(report_or_plan, Report):
        report, plan = report_or_plan.to_dict(), _replayable(report_or_plan)
    else:
        report, plan = None, Plan.coerce(report_or_plan).to_dict()
    if not isinstance(compact, bool):
        raise CompressError(f"compact must be True or False; got {shown(compact, 40)}.")
    if compact and codec not in CODECS:
        raise CompressError(f"codec must be one of {', '.join(map(repr, CODECS))}; got {shown(codec, 40)}. Use "
                            f"'zstd' (smallest) or 'lz4' (fastest to load).")
    tensors = _tensors(model)
    manifest = {
        "schema": ARTIFACT_SCHEMA, "plan": plan, "report": report, "versions": current_versions(),
        "example_inputs": None if example_inputs is None else input_spec(example_inputs),
        "data_fingerprint": fingerprint(data),
    }
    manifest = json.loads(dumps(manifest, default=str))  # as it will be read back (strict JSON)
    manifest["sha256"] = _manifest_digest(_digest(tensors), manifest)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _clean_orphans(path.parent, path.name)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        metadata = {_KEY: dumps(manifest, default=str)}
        if compact:
            payload, metadata[_COMPACT_KEY] = encode(tensors, codec)
            tensors = {_PAYLOAD: payload}
        save_file(tensors, tmp, metadata=metadata)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def artifact_sizes(model: nn.Module, report_or_plan: Report | Plan | Any = None, *, codec: str = "zstd"
                   ) -> dict[str, int]:
    """Bytes of ``model``'s dense artifact and of its compact one (``codec``), measured: both are written to a
    temporary folder by :func:`save` (with ``report_or_plan``'s manifest; an empty plan when None) and removed.
    Keys ``disk_artifact_bytes`` and ``disk_compact_bytes``, as report metrics."""
    plan = Plan.of() if report_or_plan is None else report_or_plan
    with tempfile.TemporaryDirectory() as folder:
        dense = save(model, plan, Path(folder) / "dense.safetensors").stat().st_size
        compact = save(model, plan, Path(folder) / "compact.safetensors", compact=True, codec=codec).stat().st_size
    return {"disk_artifact_bytes": dense, "disk_compact_bytes": compact}


def record_artifact_sizes(report: Report, model: nn.Module, small: nn.Module, *, codec: str = "zstd") -> Report:
    """Add the measured artifact sizes to ``report``'s metrics: ``model``'s (the original, saved with an empty
    plan) before, ``small``'s (with the report's plan) after; the summary then shows bytes in memory, in the
    dense artifact and in the compact artifact, each measured. Returns ``report``."""
    report.metrics_before.update(artifact_sizes(model, None, codec=codec))
    report.metrics_after.update(artifact_sizes(small, report, codec=codec))
    return report


ARTIFACT_NAME = "model.safetensors"  # the file `jupyter-compress run --out FOLDER` writes in its folder


class ArtifactNotFoundError(CompressError, FileNotFoundError):
    """No artifact at the given path (``except FileNotFoundError`` still catches it)."""


def artifact_file(path: str | os.PathLike) -> Path:
    """``path`` itself, or ``path/model.safetensors`` for a folder (the output folder of the CLI's ``run``);
    a missing file raises a one-line :class:`ArtifactNotFoundError`."""
    path = Path(path)
    if path.is_dir():
        inside = path / ARTIFACT_NAME
        if not inside.is_file():
            raise ArtifactNotFoundError(f"{path} is a folder without {ARTIFACT_NAME} in it; pass the .safetensors "
                                        f"file that save() wrote, or the --out folder of 'jupyter-compress run'.")
        return inside
    if not path.exists():
        raise ArtifactNotFoundError(f"{path}: no such file.")
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    """The manifest of an artifact (plan, report, versions...), checked for schema version. ``path``: the
    ``.safetensors`` file, or a folder holding ``model.safetensors`` (the CLI's ``run --out`` folder)."""
    from safetensors import safe_open

    path = artifact_file(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
    except Exception as exc:
        raise CompressError(f"{path} is not a readable jupyter_compress artifact (truncated or corrupt: "
                            f"{str(exc).splitlines()[0][:120]}).") from None
    if _KEY not in meta:
        raise CompressError(f"{path} is a safetensors file but not a jupyter_compress artifact (no manifest).")
    return _parse_manifest(path, meta[_KEY])


def _parse_manifest(path: Path, text: Any) -> dict[str, Any]:
    """The manifest, checked field by field: a damaged or edited one is a one-line CompressError."""
    def bad(what: str) -> CompressError:
        return CompressError(f"{path}: the artifact's manifest is damaged ({what}); save it again from the model.")

    if not isinstance(text, str) or len(text) > _MAX_MANIFEST_CHARS:
        raise bad("too large")
    try:
        manifest = json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError is a ValueError; nesting past the limit
        raise bad(f"not JSON: {str(exc)[:80]}") from None
    if not isinstance(manifest, dict):
        raise bad(f"a {type(manifest).__name__}, not a mapping")
    schema = manifest.get("schema")
    if isinstance(schema, bool) or not isinstance(schema, int):
        raise bad(f"schema {shown(schema, 40)}")
    if schema > ARTIFACT_SCHEMA:
        raise SchemaVersionError(f"{path} was written with artifact schema {shown(schema, 40)}, newer than this "
                                 f"jupyter_compress reads ({ARTIFACT_SCHEMA}); upgrade: pip install -U "
                                 f"jupyter-compress.")
    if schema < ARTIFACT_SCHEMA:
        raise SchemaVersionError(f"{path} was written with artifact schema {schema}, whose digest does not cover "
                                 f"its manifest; load it with the jupyter_compress that wrote it and save it "
                                 f"again.")
    for key, kinds in (("sha256", str), ("plan", dict), ("versions", dict), ("report", (dict, type(None))),
                       ("example_inputs", (dict, type(None)))):
        if not isinstance(manifest.get(key), kinds):
            raise bad(f"{key!r} is {shown(manifest.get(key), 40)}")
    return manifest


def _checked_tensors(path: Path, manifest: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The artifact's tensors (decoded when compact), checked against the manifest's digest."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            layout = (f.metadata() or {}).get(_COMPACT_KEY)
            names = list(f.keys())
            if layout is not None and names != [_PAYLOAD]:
                raise CompressError(f"{path}: the compact artifact holds tensors {shown(names[:3], 80)} instead of "
                                    f"its one payload; save it again from the model.")
            tensors = {name: f.get_tensor(name) for name in names}
    except CompressError:
        raise
    except Exception:
        raise CompressError(f"{path}: the weights cannot be read (truncated or corrupt).") from None
    if layout is not None:
        tensors = decode(tensors[_PAYLOAD], layout, str(path))
    if _manifest_digest(_digest(tensors), manifest) != manifest["sha256"]:
        raise CompressError(f"{path}: the weights or the manifest do not match the digest recorded when saving "
                            f"(the file was changed or damaged); save it again from the model.")
    return tensors


def load_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The saved state_dict of an artifact, dense or compact, checked against its digest (no model built)."""
    path = artifact_file(path)
    return _checked_tensors(path, read_manifest(path))


def _resizable(model: nn.Module, key: str) -> bool:
    """A buffer whose size the saved file decides (an ONNX Runtime region's graph: its bytes depend on the
    export, not on the architecture), named in its module's ``resizable_buffers``."""
    owner, _, leaf = key.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return False
    return leaf in getattr(module, "resizable_buffers", ())


def load(model_factory: Callable[[], nn.Module] | nn.Module, path: str | os.PathLike, *,
         example_inputs: Any = None, data: Any = None, strict: bool = True) -> nn.Module:
    """Rebuild a saved model: a fresh model from ``model_factory`` (a callable, or a module that is
    used as it is), the saved plan replayed on it, then the saved weights loaded.

    ``path``: the ``.safetensors`` file :func:`save` wrote, or a folder holding ``model.safetensors`` (the
    ``--out`` folder of ``jupyter-compress run``). Any mismatch (digest, missing or extra keys, shapes), or no
    such file, raises a one-line CompressError and no model is returned half-loaded.
    """
    path = artifact_file(path)
    manifest = read_manifest(path)
    tensors = _checked_tensors(path, manifest)
    model = model_factory() if not isinstance(model_factory, nn.Module) else model_factory
    if not isinstance(model, nn.Module):
        raise CompressError(f"model_factory must return a torch.nn.Module; it returned a {type(model).__name__}.")
    if example_inputs is None:
        example_inputs = synth_inputs(manifest.get("example_inputs"))
    plan = Plan.from_dict(manifest["plan"])  # checked like any plan: registered methods only, bounded values
    # a step that changes values only (recovery training) is not replayed: the file holds the values, so
    # loading needs no training data and takes no training time
    steps = [s for s in plan.steps if get_method(s.method).changes_modules]
    whole = any(get_method(s.method).replaces_model and get_method(s.method).replaces_model(s.config) for s in steps)
    if whole:  # a step serves the whole model as one graph: replayed on a copy, whose result is the model
        model = replay_copy(model, dataclasses.replace(plan, steps=steps), example_inputs=example_inputs, data=data)
    elif steps:
        # replay=True: no training is run again (QAT's train function is not looked up: the file holds the values)
        compress_(model, dataclasses.replace(plan, steps=steps), example_inputs=example_inputs, data=data,
                  replay=True)
    forget_undo(model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(tensors))
    extra = sorted(set(tensors) - set(expected))
    if strict and (missing or extra):
        raise CompressError(f"{path}: the rebuilt model and the saved weights differ: missing "
                            f"{missing[:3]}, unexpected {extra[:3]}; is model_factory the same architecture?")
    bad = [k for k in tensors if k in expected and tuple(expected[k].shape) != tuple(tensors[k].shape)
           and not _resizable(model, k)]
    if bad:
        k = bad[0]
        raise CompressError(f"{path}: '{k}' has shape {tuple(tensors[k].shape)} in the file but "
                            f"{tuple(expected[k].shape)} after replaying the plan ({len(bad)} such tensors); the "
                            f"factory or the plan's data-dependent choices differ from when it was saved.")
    model.load_state_dict(tensors, strict=strict)
    return model.eval()

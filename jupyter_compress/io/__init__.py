"""Save, load and export compressed models: weights in safetensors, plan and report in JSON.

No pickle anywhere. ``load`` rebuilds the architecture by replaying the plan on a fresh model from
your factory, then loads the weights, so custom classes never need to be importable from a file.
"""

from .artifact import ARTIFACT_SCHEMA, load, read_manifest, save
from .export import ExportResult, export_onnx
from .inputs import input_spec, synth_inputs

__all__ = ["ARTIFACT_SCHEMA", "ExportResult", "export_onnx", "input_spec", "load", "read_manifest", "save", "synth_inputs"]

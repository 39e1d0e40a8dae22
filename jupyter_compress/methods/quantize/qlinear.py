"""Quantized Linear modules whose whole state is plain tensors (int8 / packed int4 + scales as buffers).

torch.ao's own ``nn.quantized.dynamic.Linear`` keeps its weight in an opaque packed object that is neither a
parameter nor a buffer: ``state_dict`` then holds a tuple and a dtype, and byte counts see nothing. These
modules keep the quantized weight as buffers (so size, hashing and safetensors work) and hand it to
torch's own kernels packed once, lazily: int8 to ``quantized::linear_dynamic`` (fbgemm / x86 / qnnpack),
weight-only int4 to ``aten._weight_int4pack_mm_for_cpu`` (see :class:`WeightOnlyLinear`). The packed forms
are caches, never in ``state_dict``: rebuilt from the buffers after ``load_state_dict``, a copy or ``.to()``.
"""

from __future__ import annotations

import platform

import torch
from torch import nn

from .._common import LayerStandIn, linear_view
from ._common import held_count, quiet

__all__ = ["DynamicInt8Linear", "WeightOnlyLinear", "quantize_rows", "quantize_groups", "INT4_KERNEL",
           "INT4_KERNEL_MODES", "DEQUANTIZED", "int4_kernel_available", "int4_kernel_vectorized"]

INT4_KERNEL = "aten._weight_int4pack_mm_for_cpu"
INT4_KERNEL_MODES = ("auto", "int4pack", "dequantize")
INT4_KERNEL_GROUPS = (32, 64, 128, 256)  # the group sizes (qGroupSize) the kernel accepts
DEQUANTIZED = "dequantized per call"


def int4_kernel_available() -> bool:
    """PyTorch has the packed int4 CPU matmul and its weight packing (torch >= 2.5)."""
    ops = torch.ops.aten
    return hasattr(ops, "_convert_weight_to_int4pack_for_cpu") and hasattr(ops, "_weight_int4pack_mm_for_cpu")


def int4_kernel_vectorized() -> bool:
    """The kernel has a vectorized bf16 path on this CPU: x86 with AVX2 / AVX512 (PyTorch's dispatch level,
    ``torch.backends.cpu.get_cpu_capability()``) or aarch64 (NEON). Elsewhere it runs a scalar loop, slower
    than a float32 matmul; fp32 / fp16 activations take that scalar loop on x86 too."""
    if platform.machine().lower() in ("aarch64", "arm64"):
        return True
    try:
        return torch.backends.cpu.get_cpu_capability() in ("AVX2", "AVX512")
    except Exception:  # pragma: no cover - very old torch
        return False


def quantize_rows(weight: torch.Tensor, per_channel: bool, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric quantization of a 2-D weight: ``(q int8, scale float32 per row)``; q in [-(2^(b-1)-1), ...]."""
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float()
    amax = w.abs().amax(dim=1) if per_channel else w.abs().amax().expand(w.shape[0])
    scale = (amax / qmax).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)
    return q, scale.contiguous()


def quantize_groups(weight: torch.Tensor, bits: int, group: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric group-wise quantization along the input dimension: ``(q int8 (out, in), scale (out, in/group))``."""
    out_f, in_f = weight.shape
    qmax = 2 ** (bits - 1) - 1
    w = weight.detach().float().reshape(out_f, in_f // group, group)
    scale = (w.abs().amax(dim=2) / qmax).clamp_min(1e-12)
    q = torch.clamp(torch.round(w / scale[..., None]), -qmax, qmax).to(torch.int8)
    return q.reshape(out_f, in_f), scale.contiguous()


def pack_int4(q: torch.Tensor) -> torch.Tensor:
    """Signed 4-bit codes (int8 in [-8, 7], last dimension even) packed two per byte: low nibble = even column."""
    u = (q + 8).to(torch.uint8).reshape(*q.shape[:-1], -1, 2)
    return (u[..., 0] | (u[..., 1] << 4)).contiguous()


def unpack_int4(packed: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: int8 codes, the last dimension doubled."""
    return torch.stack([(packed & 0x0F).to(torch.int8) - 8, (packed >> 4).to(torch.int8) - 8], dim=-1).flatten(-2)


class DynamicInt8Linear(LayerStandIn, nn.Module):
    """y = x W^T + b with W in int8 (symmetric, per output channel or per tensor) and x quantized per call.

    Replaces an ``nn.Linear`` or a transformers ``Conv1D``; ``weight`` reads as the replaced layer's (a
    :class:`~jupyter_compress.methods._common.WeightStandIn`: float dtype and layout, dequantized when used).
    """

    def __init__(self, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None, per_channel: bool,
                 layer: nn.Module | None = None):
        super().__init__()
        self._keep_layer(layer, None if layer is not None else {"weight": qweight})  # no layer: a float32 Linear
        self.in_features, self.out_features = qweight.shape[1], qweight.shape[0]
        self.per_channel = per_channel
        self.register_buffer("qweight", qweight)
        self.register_buffer("scale", scale)
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self._packed = None

    @classmethod
    def from_linear(cls, linear: nn.Module, per_channel: bool = True) -> DynamicInt8Linear:
        """From an ``nn.Linear`` or a transformers ``Conv1D``."""
        view = linear_view(linear)
        q, scale = quantize_rows(view.weight, per_channel)
        return cls(q, scale, view.bias, per_channel, layer=linear)

    def dequantized_weight(self) -> torch.Tensor:
        """The int8 weight times its scales: (out, in) float32, the layout of ``nn.Linear``."""
        return self.qweight.float() * self.scale[:, None]

    dense_weight = dequantized_weight

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 weight and the bias count as parameters (core.metrics.count_params)."""
        return held_count((self.qweight, self.bias), nonzero)

    def _pack(self):
        with quiet():
            if self.per_channel:
                zeros = torch.zeros(self.out_features, dtype=torch.long)
                qw = torch.quantize_per_channel(self.qweight.float() * self.scale[:, None], self.scale.double(),
                                                zeros, 0, torch.qint8)
            else:
                qw = torch.quantize_per_tensor(self.dequantized_weight(), float(self.scale[0]), 0, torch.qint8)
            return torch.ops.quantized.linear_prepack(qw, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._packed is None:
            self._packed = self._pack()
        # fbgemm / x86 kernels use 7-bit activations to avoid int16 overflow without VNNI; qnnpack does not
        reduce_range = torch.backends.quantized.engine in ("fbgemm", "x86")
        with quiet():
            y = torch.ops.quantized.linear_dynamic(x.float(), self._packed, reduce_range)
        return y.to(x.dtype)

    def _load_from_state_dict(self, *args, **kwargs):
        self._packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_packed"] = None  # the packed kernel weight is rebuilt from the buffers on first use
        return state

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"weights=int8 {'per-channel' if self.per_channel else 'per-tensor'}, activations=dynamic int8")


class WeightOnlyLinear(LayerStandIn, nn.Module):
    """Weights stored in int8 or int4 (two per byte), symmetric group-wise scales; activations stay float.

    The buffers (``qweight``, ``scale``, ``bias``, and ``zero`` for an asymmetric grid) are the whole state.
    Made from a float layer it quantizes symmetrically (:func:`quantize_groups`); :meth:`from_codes` holds codes
    a method computed itself (GPTQ), optionally with a zero point per group (weight = (code - zero) * scale).
    3-bit codes are held in the int4 container: two per byte, so they take the bytes of int4.

    int4 (and int3) layers run PyTorch's packed int4 CPU matmul (``aten._weight_int4pack_mm_for_cpu``) where
    it can: a CPU input of float32 or bfloat16 with no gradient wanted, ``out_features % 16 == 0``, a group of
    32, 64, 128 or 256 input columns, and (``kernel='auto'``) a CPU where the kernel is vectorized (x86 AVX2 /
    AVX512, aarch64). That kernel computes in bfloat16: the input is rounded to bf16, each weight is
    ``(u - 8) * bf16(scale) + bf16(zero term)`` with float32 accumulation, and the output is rounded to bf16
    then returned in the input's dtype (the bias is added after, in that dtype). Its relative output error
    against the float32 dequantized path is about 3e-3 (measured 2.6e-3 to 3.6e-3), some 20x below int4's own
    quantization error (about 7e-2 at group 128). Otherwise (int8, other shapes, other devices, fp16 / fp64
    inputs, autograd, tracing for ONNX) the weight is dequantized to float at each call: smaller, not faster.

    ``kernel``: ``'auto'`` (the kernel where it applies and is vectorized), ``'int4pack'`` (the kernel
    wherever it applies, even on a CPU where it is scalar), ``'dequantize'`` (never). 'auto' does not time
    anything: measured on a 2-core AVX512 machine the kernel beat the dequantized path at every batch tried
    (1 to 4096 rows, 2x to 30x), and beat fp32 ``nn.Linear`` at small batches (13x at batch 1 on a 4096 x
    4096 layer) but ran 0.5x to 1.5x its speed at 32 to 4096 rows (loaded machine, noisy). Its packed weight
    is built on first use and cached outside ``state_dict`` (its layout depends on the CPU), rebuilt after
    ``load_state_dict``, a deep copy, pickling or ``.to()``; in memory it is a second int4 copy of the weight
    (the size of ``qweight``, plus bf16 scales), which byte counts do not include. Replaces an ``nn.Linear``
    or a transformers ``Conv1D`` (whose ``weight`` and ``nf`` it keeps).
    """

    def __init__(self, linear: nn.Module, bits: int, group: int, kernel: str = "auto",
                 codes: torch.Tensor | None = None, scale: torch.Tensor | None = None,
                 zero: torch.Tensor | None = None, *, weight: torch.Tensor | None = None,
                 input_scale: torch.Tensor | None = None):
        super().__init__()
        if kernel not in INT4_KERNEL_MODES:
            raise ValueError(f"kernel must be one of {', '.join(INT4_KERNEL_MODES)}; got {kernel!r}")
        self._keep_layer(linear)
        view = linear_view(linear)
        self.in_features, self.out_features, self.bits, self.group = view.in_features, view.out_features, bits, group
        self.kernel = kernel
        if codes is None:
            q, scale = quantize_groups(view.weight if weight is None else weight, bits, group)
        else:  # codes and scales computed by the caller (see from_codes)
            q = codes
        if bits <= 4:  # two signed 4-bit values per byte
            q = pack_int4(q)
        self.register_buffer("qweight", q)
        self.register_buffer("scale", scale.to(view.weight.dtype if view.weight.is_floating_point() else
                                               torch.float32))
        self.register_buffer("zero", None if zero is None else zero.to(torch.int8).contiguous())
        self.register_buffer("bias", None if view.bias is None else view.bias.detach().clone())
        self._int4pack = None  # (key of the buffers it was built from, packed uint8, scales_and_zeros bf16)
        # optional per-input-channel multiplier applied to x first (activation-aware scaling kept in the layer)
        self.register_buffer("input_scale", None if input_scale is None else input_scale.detach().clone())

    @classmethod
    def from_codes(cls, linear: nn.Module, codes: torch.Tensor, scale: torch.Tensor, bits: int, group: int,
                   zero: torch.Tensor | None = None) -> WeightOnlyLinear:
        """The layer holding given integer codes (``(out, in)``) and scales (``(out, in / group)``), nothing
        re-quantized; ``linear`` (an ``nn.Linear`` or a ``Conv1D``) gives the attributes and the bias.

        Symmetric (``zero`` None): weight = codes * scale, codes in [-(2^(b-1)-1), 2^(b-1)-1] (the grid of
        :func:`quantize_groups`). Asymmetric: weight = (codes - zero) * scale per group, codes and zero points
        in [-2^(b-1), 2^(b-1)-1] (``2^b`` levels, e.g. 16 for int4)."""
        view = linear_view(linear)
        if bits not in (3, 4, 8):
            raise ValueError(f"bits must be 3, 4 or 8; got {bits}")
        low, high = (-(2 ** (bits - 1) - 1) if zero is None else -(2 ** (bits - 1))), 2 ** (bits - 1) - 1
        groups = (view.out_features, view.in_features // max(group, 1))
        if tuple(codes.shape) != (view.out_features, view.in_features) or view.in_features % group or \
                tuple(scale.shape) != groups or (zero is not None and tuple(zero.shape) != groups):
            raise ValueError(f"codes {tuple(codes.shape)} / scale {tuple(scale.shape)} do not fit a layer "
                             f"({view.out_features}, {view.in_features}) with groups of {group}")
        for name, t in (("codes", codes), ("zero points", zero)):
            if t is not None and t.numel() and (int(t.min()) < low or int(t.max()) > high):
                raise ValueError(f"{name} exceed the {bits}-bit grid [{low}, {high}]")
        return cls(linear, bits, group, codes=codes.to(torch.int8), scale=scale.detach().float(), zero=zero)

    @classmethod
    def from_weight(cls, linear: nn.Module, weight: torch.Tensor, bits: int, group: int,
                    input_scale: torch.Tensor | None = None) -> WeightOnlyLinear:
        """Replace ``linear`` (its bias, attributes and stand-in weight), quantizing ``weight`` (out, in) instead
        of its own; ``input_scale`` (in,): multiply the input by it first."""
        return cls(linear, bits, group, weight=weight, input_scale=input_scale)

    def dense_weight(self) -> torch.Tensor:
        w, m = self.dequantized_weight(), getattr(self, "input_scale", None)  # modules pickled before: none
        return w if m is None else w * m.to(w.dtype)[None, :]

    def held_parameters(self, nonzero: bool = False) -> int:
        """The int8 / int4 weight elements (two per byte for int4) and the bias count as parameters."""
        if not nonzero:
            return self.out_features * self.in_features + held_count((self.bias,), False)
        if self.zero is not None:  # a weight is zero where its code equals its group's zero point
            return int(torch.count_nonzero(self.dequantized_weight())) + held_count((self.bias,), True)
        q = self.qweight
        zeros = int(torch.count_nonzero((q & 0x0F) == 8) + torch.count_nonzero((q >> 4) == 8)) if self.bits <= 4 \
            else q.numel() - int(torch.count_nonzero(q))
        return self.out_features * self.in_features - zeros + held_count((self.bias,), True)

    def codes(self) -> torch.Tensor:
        """The integer codes, (out, in) int8: signed, in [-7, 7] for int4 and [-127, 127] for int8."""
        q = unpack_int4(self.qweight) if self.bits <= 4 else self.qweight
        return q.reshape(self.out_features, self.in_features)

    def dequantized_weight(self) -> torch.Tensor:
        """(out, in) in the scales' dtype, the layout of ``nn.Linear``."""
        q = self.codes().reshape(self.out_features, -1, self.group).to(self.scale.dtype)
        if self.zero is not None:
            q = q - self.zero.to(self.scale.dtype)[..., None]
        return (q * self.scale[..., None]).reshape(self.out_features, self.in_features)

    # -- the packed int4 kernel ------------------------------------------------------------------------------
    def kernel_unusable(self) -> str | None:
        """Why this layer does not run the int4 kernel (for any input), or None when it does on CPU inputs of
        float32 / bfloat16."""
        if self.kernel == "dequantize":
            return "kernel='dequantize'"
        if self.bits > 4:
            return f"int{self.bits} has no weight-only kernel here"
        if not int4_kernel_available():
            return f"this PyTorch ({torch.__version__}) lacks {INT4_KERNEL}"
        if self.qweight.device.type != "cpu":
            return f"weights on {self.qweight.device.type}, the kernel is CPU-only"
        if self.group not in INT4_KERNEL_GROUPS:
            return f"group {self.group}: the kernel takes groups of {', '.join(map(str, INT4_KERNEL_GROUPS))}"
        if self.out_features % 16:
            return f"{self.out_features} outputs: the kernel needs a multiple of 16"
        if self.kernel == "auto" and not int4_kernel_vectorized():
            return "the kernel is not vectorized on this CPU (kernel='int4pack' forces it)"
        return None

    def kernel_label(self) -> str:
        """What this layer runs on CPU float32 / bfloat16 inputs: 'int4 kernel: aten....', or 'dequantized per
        call (why)'."""
        why = self.kernel_unusable()
        return f"int4 kernel: {INT4_KERNEL}" if why is None else f"{DEQUANTIZED} ({why})"

    def _buffers_key(self) -> tuple:
        """Identifies the buffers' storage and contents: an in-place write bumps ``_version``, a new tensor
        (``load_state_dict`` with assign, ``.to()``) moves ``data_ptr``."""
        def version(t: torch.Tensor) -> int | None:
            try:
                return t._version
            except RuntimeError:  # an inference-mode tensor tracks no version (and cannot be written outside it)
                return None
        return tuple((t.data_ptr(), version(t), t.dtype, t.device) for t in (self.qweight, self.scale, self.zero)
                     if t is not None)

    def _packed_int4(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The kernel's weight (uint8, its own CPU-specific layout) and scales_and_zeros (in/group, out, 2) bf16,
        built from the buffers when they changed: codes 0..15 are ``code + 8`` (the stored nibbles as they are),
        the kernel dequantizes ``(u - 8) * scale + zero``, so zero = 0 gives our symmetric weights."""
        key = self._buffers_key()
        if self._int4pack is None or self._int4pack[0] != key:
            q = self.qweight
            u = torch.stack([q & 0x0F, q >> 4], dim=-1).reshape(self.out_features, self.in_features)
            packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(u.to(torch.int32).contiguous(), 1)
            scale = self.scale.t().float()
            # asymmetric grids (GPTQ): weight = (u - 8 - zero) * scale, so the kernel's zero term is -zero * scale
            offset = torch.zeros_like(scale) if self.zero is None else -self.zero.t().float() * scale
            scales_and_zeros = torch.stack([scale, offset], dim=-1).to(torch.bfloat16).contiguous()
            self._int4pack = (key, packed, scales_and_zeros)
        return self._int4pack[1], self._int4pack[2]

    def _kernel_applies(self, x: torch.Tensor) -> bool:
        if torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():  # ONNX has no such op: export dequantized
            return False
        return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16)
                and x.shape[-1] == self.in_features and x.numel() > 0
                and not (x.requires_grad and torch.is_grad_enabled())  # the kernel has no backward
                and self.kernel_unusable() is None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = getattr(self, "input_scale", None)
        if m is not None:
            x = x * m.to(x.dtype)
        if self._kernel_applies(x):
            packed, scales_and_zeros = self._packed_int4()
            x2 = x.reshape(-1, self.in_features).to(torch.bfloat16).contiguous()
            y = torch.ops.aten._weight_int4pack_mm_for_cpu(x2, packed, self.group, scales_and_zeros)
            y = y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)
            return y if self.bias is None else y + self.bias.to(x.dtype)
        return nn.functional.linear(x, self.dequantized_weight().to(x.dtype),
                                    None if self.bias is None else self.bias.to(x.dtype))

    def _load_from_state_dict(self, *args, **kwargs):
        self._int4pack = None
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, *args, **kwargs):
        self._int4pack = None
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_int4pack"] = None  # the kernel's weight is rebuilt from the buffers on first use
        return state

    def __setstate__(self, state):
        state.setdefault("kernel", "auto")  # pickled before the kernel existed
        state.setdefault("_int4pack", None)
        super().__setstate__(state)

    def extra_repr(self) -> str:
        held = " (in the int4 container)" if self.bits == 3 else ""
        grid = ", asymmetric" if self.zero is not None else ""
        scaled = ", input_scale" if getattr(self, "input_scale", None) is not None else ""
        return (f"in_features={self.in_features}, out_features={self.out_features}, int{self.bits}{held}, "
                f"group={self.group}{grid}{scaled}, kernel={self.kernel}")

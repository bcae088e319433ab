"""How a loaded judge computes on a CPU: all fp32, or bf16 matmuls in its frozen layers where the CPU has native bf16.

    float32          every weight and activation fp32. Training, evaluation, `ehrjudge run`, the gate and generator
                     rewards always use it, so the same command gives the same numbers on every machine.
    bf16-frozen-mlp  for a judge with a LoRA adapter: the adapter is merged into the base weights, and the MLP linear
                     layers (gate, up, down) of the decoder layers below the first adapted layer keep a bf16 copy of
                     their weights. Such a layer computes y = float32(bf16(x) @ bf16(W)^T) in bf16 matmul kernels
                     (AMX / AVX-512 BF16 through oneDNN). Everything else stays fp32: the residual stream, norms,
                     rotary embeddings, attention, the MLP's silu(gate) * up product, the adapted (trained) layers and
                     the label head.
    bf16-frozen      the same on every linear layer of the frozen layers (attention projections too): faster, and
                     further from fp32.
    auto             bf16-frozen-mlp when all of these hold, else float32; the choice and its reason are logged:
                     - the model is fp32 on a CPU whose flags include amx_bf16 or avx512_bf16 (elsewhere bf16 is
                       emulated and slower than fp32);
                     - the judge has a LoRA adapter (it marks which layers are frozen);
                     - the hidden size is at least MIN_HIDDEN. The speed-up was measured on SmolLM2-135M (hidden 576)
                       only; tiny models are bound by per-op overhead, not matmuls.

Measured with benchmarks/judge_runtimes.py on the default judge (500 records; docs/judge.md): bf16 on the whole model
(torch.autocast) moved the expected score by up to 0.22 and bf16-frozen by up to 0.073, both past the 0.05 limit, so
auto takes the MLP-only form. What moves the score is rounding the activations, not the weights: on 160 validation
records, bf16-rounded weights in fp32 matmuls moved it by at most 0.008, bf16-rounded inputs by 0.018. Keeping the MLP's
intermediate product in bf16 (as autocast does) adds to it, so it stays fp32. No choice of a range of frozen layers
was both faster and closer (docs/judge.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ehrjudge.errors import InputError
from ehrjudge.judge.forward import base_causal_lm, decoder_layers, merged

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "float32", "bf16-frozen-mlp", "bf16-frozen")
AUTO_FAST = "bf16-frozen-mlp"  # the bf16 form inside the drift limits (module docstring)
NATIVE_BF16_FLAGS = ("amx_bf16", "avx512_bf16")
MIN_HIDDEN = 256  # auto keeps fp32 below it: the speed-up is measured at hidden 576 only; small models are op-bound


class Bf16Linear(nn.Module):
    """A frozen nn.Linear whose matmul runs in bf16: y = float32(bf16(x) @ W_bf16^T) + b, b kept in fp32."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.register_buffer("weight", linear.weight.detach().to(torch.bfloat16))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(x.to(torch.bfloat16), self.weight).to(x.dtype)
        return y if self.bias is None else y + self.bias


def cpu_flags(path: Path = Path("/proc/cpuinfo")) -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        text = path.read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_bf16(flags: set[str] | None = None) -> bool:
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in NATIVE_BF16_FLAGS)


def adapted_layers(model) -> list[int]:
    """Indices of the decoder layers that hold LoRA weights."""
    return [i for i, layer in enumerate(decoder_layers(model))
            if any("lora_" in name for name, _ in layer.named_parameters())]


def resolve_precision(model, precision: str, flags: set[str] | None = None) -> str:
    """`precision` with auto decided for this model and machine (logged): float32 or AUTO_FAST."""
    if precision not in PRECISIONS:
        raise InputError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision != "auto":
        return precision
    weight = next(model.parameters())
    hidden = base_causal_lm(model).config.hidden_size
    reasons = [why for failed, why in (
        (weight.device.type != "cpu", f"the model is on {weight.device.type} (its dtype setting decides there)"),
        (weight.dtype != torch.float32, "the model is not fp32"),
        (not native_bf16(flags), f"this CPU has none of {', '.join(NATIVE_BF16_FLAGS)}"),
        (not adapted_layers(model), "the judge has no LoRA adapter marking its frozen layers"),
        (hidden < MIN_HIDDEN, f"hidden size {hidden} < {MIN_HIDDEN}"),
    ) if failed]
    chosen = "float32" if reasons else AUTO_FAST
    log.info("judge precision auto -> %s (%s)", chosen, "; ".join(reasons) or "native bf16 CPU, LoRA judge")
    return chosen


def apply_precision(model, precision: str, flags: set[str] | None = None):
    """The model to judge with under `precision` (auto resolved here): unchanged for float32; otherwise the adapter
    merged into the base weights and the frozen layers' MLP (bf16-frozen-mlp) or all (bf16-frozen) linear layers
    replaced by Bf16Linear."""
    chosen = resolve_precision(model, precision, flags)
    if chosen == "float32":
        return model
    adapted = adapted_layers(model)
    if not adapted:
        raise InputError(f"precision {chosen} needs a judge with a LoRA adapter: it marks which layers were "
                         "trained (and stay fp32); use float32 for this model")
    if next(model.parameters()).dtype != torch.float32:
        raise InputError(f"precision {chosen} needs the model loaded in float32 (--dtype float32)")
    model = merged(model)
    frozen = decoder_layers(model)[:min(adapted)]
    for layer in frozen:
        for parent in list((layer.mlp if chosen == "bf16-frozen-mlp" else layer).modules()):
            for name, child in list(parent.named_children()):
                if isinstance(child, nn.Linear):
                    setattr(parent, name, Bf16Linear(child))
    log.info("judge precision %s: bf16 matmuls in the %s of decoder layers 0-%d; layers %d-%d and the head fp32",
             chosen, "MLPs" if chosen == "bf16-frozen-mlp" else "linear layers", len(frozen) - 1, len(frozen),
             len(decoder_layers(model)) - 1)
    return model.eval()

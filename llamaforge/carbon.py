"""Compute and carbon: the paper's Table 2 method, a planned-run estimator, and a per-run record.

Llama 2 §2.2.1 (Table 2) estimates emissions as

    tCO2eq = device-hours x peak power per device (kW) x PUE x carbon intensity

with PUE 1.1 and 0.385 kgCO2eq/kWh, i.e. 0.4235 kg per device-kWh (paper §2.2.1). Everything here is
plain arithmetic on numbers; nothing touches a GPU, so the module imports no torch.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from llamaforge.config import MODEL_PRESETS, ModelConfig
from llamaforge.errors import UserError

# §2.2.1: "power usage efficiency" of 1.1 and a carbon intensity of 0.385 kgCO2eq/kWh.
PUE = 1.1
CARBON_INTENSITY_KG_PER_KWH = 0.385

# A CPU's draw is not in any table we can look up from a device name; 65 W is the package power
# (TDP) of a typical desktop CPU and the upper end of a laptop's, so it errs on the high side there.
CPU_WATTS = 65.0

# A GPU missing from the table is assumed to draw what the paper's A100-80GB did (§2.2.1).
UNKNOWN_GPU_WATTS = 400.0


# --- Accelerators ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Accelerator:
    """One device: its board power, its dense bf16 tensor-core peak, and how to recognise its name."""

    name: str  # what `--accelerator` takes
    watts: float  # maximum board power (TDP) from the vendor's datasheet
    peak_flops: float  # dense (no structured sparsity) bf16 FLOP/s from the vendor's datasheet
    match: tuple[str, ...]  # words that must all appear in torch.cuda.get_device_name()
    note: str = ""


# Ordered most specific first: the first row whose words all appear in a device name wins, so
# "NVIDIA H100 PCIe" finds the PCIe card before the catch-all H100 (SXM) row.
ACCELERATORS: tuple[Accelerator, ...] = (
    Accelerator("H100-PCIe", 350, 756e12, ("h100", "pcie"), "NVIDIA H100 PCIe datasheet"),
    Accelerator("H100", 700, 989e12, ("h100",), "NVIDIA H100 SXM5 datasheet"),
    Accelerator("H200", 700, 989e12, ("h200",), "NVIDIA H200 SXM datasheet"),
    Accelerator("A100-PCIe", 300, 312e12, ("a100", "pcie"), "NVIDIA A100 80GB PCIe (the 40GB PCIe is 250 W)"),
    Accelerator("A100-40GB", 400, 312e12, ("a100", "40gb"), "NVIDIA A100 40GB SXM4 datasheet"),
    Accelerator(
        "A100-80GB", 400, 312e12, ("a100",),
        "Llama 2 §2.2.1 Table 2: 400 W (the 34B row is listed at 350 W); NVIDIA A100 SXM4 datasheet",
    ),
    Accelerator("V100", 300, 125e12, ("v100",), "NVIDIA V100 SXM2; no bf16, so the fp16 tensor-core peak"),
    Accelerator("L4", 72, 121e12, ("l4",), "NVIDIA L4 datasheet"),
    Accelerator("MI300X", 750, 1307e12, ("mi300x",), "AMD Instinct MI300X datasheet"),
)


def find_accelerator(device_name: str) -> Accelerator | None:
    """The table row for a device name ("NVIDIA A100-SXM4-80GB", "h100", "A100-40GB"), or None.

    Matching is case-insensitive and by whole words, not raw substrings, so "L4" does not claim an
    "NVIDIA L40S" and "H200" does not claim a "GH200".
    """
    lowered = device_name.lower()
    for accelerator in ACCELERATORS:
        if all(re.search(rf"(?<![a-z0-9]){re.escape(word)}(?![a-z0-9])", lowered) for word in accelerator.match):
            return accelerator
    return None


def accelerator_named(name: str) -> Accelerator:
    """Like `find_accelerator`, but a name the table does not know is the user's error."""
    accelerator = find_accelerator(name)
    if accelerator is None:
        known = ", ".join(a.name for a in ACCELERATORS)
        raise UserError(f"unknown accelerator '{name}' (known: {known})")
    return accelerator


def device_power_watts(device_name: str | None, override_watts: float | None, is_cuda: bool) -> float:
    """Watts to charge per device: the override if given, else the table's, else a default.

    `device_name` is what `torch.cuda.get_device_name()` returns; on a CPU it is ignored and the
    documented `CPU_WATTS` applies. A GPU the table does not know gets `UNKNOWN_GPU_WATTS`.
    """
    if override_watts is not None:
        if not override_watts > 0:
            raise UserError(f"--watts {override_watts}: must be positive")
        return float(override_watts)
    if not is_cuda:
        return CPU_WATTS
    accelerator = find_accelerator(device_name or "")
    return float(accelerator.watts) if accelerator else UNKNOWN_GPU_WATTS


# --- The paper's method (§2.2.1) -------------------------------------------------------------------


def energy_kwh(device_hours: float, watts: float) -> float:
    """Energy drawn by the devices themselves, before the data centre's overhead (PUE)."""
    return device_hours * watts / 1000


def tco2eq(
    device_hours: float, watts: float, pue: float = PUE, intensity: float = CARBON_INTENSITY_KG_PER_KWH
) -> float:
    """Tonnes of CO2-equivalent: device energy x PUE x grid intensity (kg/kWh), in tonnes."""
    return energy_kwh(device_hours, watts) * pue * intensity / 1000


def compute_record(
    elapsed_seconds: float,
    n_devices: int,
    watts: float,
    pue: float = PUE,
    intensity: float = CARBON_INTENSITY_KG_PER_KWH,
) -> dict:
    """What a run has spent so far, as plain numbers for metrics.jsonl and a run summary."""
    device_hours = elapsed_seconds * n_devices / 3600
    return {
        "device_hours": device_hours,
        "energy_kwh": energy_kwh(device_hours, watts),
        "tco2eq": tco2eq(device_hours, watts, pue, intensity),
    }


# Table 2 as published: (model, A100-80GB GPU-hours, power per GPU in W, tCO2eq).
PAPER_TABLE_2 = (
    ("7B", 184_320, 400, 31.22),
    ("13B", 368_640, 400, 62.44),
    ("34B", 1_038_336, 350, 153.90),
    ("70B", 1_720_320, 400, 291.42),
)
PAPER_TABLE_2_TOTAL = (3_311_616, 539.00)


def truncate_2dp(value: float) -> float:
    """Round toward zero to 0.01, as Table 2 does.

    With 0.4235 kg/kWh the exact 13B and 34B values are 62.4476 and 153.9074 t, published as 62.44
    and 153.90: truncated, not rounded (no single intensity makes all four rows round correctly).
    The inner round() keeps float noise such as 153.8999999 from dropping a cent.
    """
    return math.floor(round(value * 100, 6)) / 100


def table_2_reproduced(pue: float = PUE, intensity: float = CARBON_INTENSITY_KG_PER_KWH) -> dict:
    """Table 2 recomputed from its GPU-hours and power columns, beside the published tCO2eq."""
    rows = []
    for model, gpu_hours, watts, published in PAPER_TABLE_2:
        exact = tco2eq(gpu_hours, watts, pue, intensity)
        rows.append(
            {"model": model, "gpu_hours": gpu_hours, "watts": watts, "published_tco2eq": published,
             "tco2eq": exact, "tco2eq_2dp": truncate_2dp(exact)}
        )
    gpu_hours = sum(row["gpu_hours"] for row in rows)
    exact = sum(row["tco2eq"] for row in rows)
    # The published total (539.00) is the sum of the unrounded rows: the rounded rows add up to 538.98.
    total = {"model": "total", "gpu_hours": gpu_hours, "published_tco2eq": PAPER_TABLE_2_TOTAL[1],
             "tco2eq": exact, "tco2eq_2dp": truncate_2dp(exact)}
    return {"rows": rows, "total": total}


# --- Planned runs -----------------------------------------------------------------------------------


def preset_named(name: str) -> ModelConfig:
    if name not in MODEL_PRESETS:
        raise UserError(f"unknown model preset '{name}' (known: {', '.join(MODEL_PRESETS)})")
    return MODEL_PRESETS[name]()


def flops_per_token(model: ModelConfig, seq_len: int, attention: bool = True) -> float:
    """Training FLOPs per token: 6N for the weight matmuls (forward 2N, backward 4N), plus, if
    `attention`, 12 * n_layers * dim * seq_len for the score and value matmuls (the PaLM paper's
    Appendix B count, without discounting the causal mask). N counts every parameter, embeddings
    included, as Llama 2's "7B" (6.74B) does."""
    per_token = 6 * model.num_parameters()
    if attention:
        per_token += 12 * model.n_layers * model.dim * seq_len
    return float(per_token)


def estimate_run(
    model: ModelConfig | str, tokens: float, device: Accelerator | str, num_devices: int = 1, mfu: float = 0.4,
    watts: float | None = None, seq_len: int | None = None, attention: bool = True,
    pue: float = PUE, intensity: float = CARBON_INTENSITY_KG_PER_KWH,
) -> dict:
    """Device-hours, wall clock, energy and emissions of training `model` on `tokens` tokens, given
    the fraction of the device's dense bf16 peak that the run sustains (model FLOPs utilisation).
    `model` is a config or a preset name; `device` a table row or a name `find_accelerator` knows."""
    model = preset_named(model) if isinstance(model, str) else model
    accelerator = accelerator_named(device) if isinstance(device, str) else device
    seq_len = seq_len or model.max_seq_len
    watts = accelerator.watts if watts is None else watts
    per_token = flops_per_token(model, seq_len, attention)
    tokens_per_second = accelerator.peak_flops * mfu / per_token  # per device
    device_hours = tokens / tokens_per_second / 3600
    return {
        "parameters": model.num_parameters(),
        "tokens": tokens,
        "seq_len": seq_len,
        "device": accelerator.name,
        "num_devices": num_devices,
        "mfu": mfu,
        "watts": watts,
        "flops": per_token * tokens,
        "tokens_per_second_per_device": tokens_per_second,
        "device_hours": device_hours,
        "wall_clock_days": device_hours / num_devices / 24,
        "energy_kwh": energy_kwh(device_hours, watts),
        "tco2eq": tco2eq(device_hours, watts, pue, intensity),
    }


def implied_mfu(
    model: ModelConfig | str, tokens: float, device_hours: float, device: Accelerator | str,
    seq_len: int | None = None, attention: bool = True,
) -> float:
    """The MFU a reported run must have sustained: its FLOPs over what the devices could do at peak."""
    model = preset_named(model) if isinstance(model, str) else model
    accelerator = accelerator_named(device) if isinstance(device, str) else device
    flops = flops_per_token(model, seq_len or model.max_seq_len, attention) * tokens
    return flops / (device_hours * 3600 * accelerator.peak_flops)


# --- `llamaforge carbon` ----------------------------------------------------------------------------


@dataclass
class CarbonArgs:
    """Reproduce the paper's Table 2 (no options), or estimate a planned run's compute and CO2."""

    model: str | None = None
    """Model preset to estimate (e.g. llama2_7b); needs --tokens and --accelerator."""
    tokens: float | None = None
    """Training tokens, e.g. 2e12 (the paper's 2T)."""
    accelerator: str | None = None
    """Accelerator model: A100-80GB, A100-40GB, A100-PCIe, H100, H100-PCIe, H200, V100, L4, MI300X."""
    num_devices: int = 1
    """Devices training together; only the wall-clock days depend on it."""
    mfu: float = 0.4
    """Model FLOPs utilisation: fraction of the dense bf16 peak sustained (Llama 2 7B: ~0.45)."""
    watts: float | None = None
    """Power per device in W; default: the device's datasheet TDP."""
    seq_len: int | None = None
    """Sequence length for the attention FLOPs; default: the preset's max_seq_len."""
    attention_flops: bool = True
    """Count attention's 12*n_layers*dim*seq_len FLOPs per token on top of 6N."""
    pue: float = PUE
    """Data-centre power usage effectiveness (the paper: 1.1)."""
    intensity: float = CARBON_INTENSITY_KG_PER_KWH
    """Grid carbon intensity in kgCO2eq/kWh (the paper: 0.385)."""


def table_2_markdown(table: dict) -> str:
    lines = [
        "| model | GPU-hours | power (W) | tCO2eq published | tCO2eq computed | exact |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for row in [*table["rows"], table["total"]]:
        watts = row.get("watts", "")
        lines.append(
            f"| {row['model']} | {row['gpu_hours']:,} | {watts} | {row['published_tco2eq']:.2f} "
            f"| {row['tco2eq_2dp']:.2f} | {row['tco2eq']:.4f} |"
        )
    return "\n".join(lines)


def estimate_text(estimate: dict) -> str:
    e = estimate
    return "\n".join([
        f"{e['parameters'] / 1e9:.2f}B parameters, {e['tokens']:.3g} tokens at seq_len {e['seq_len']}, "
        f"{e['num_devices']} x {e['device']} at {e['mfu']:.0%} MFU, {e['watts']:g} W each",
        f"training FLOPs      {e['flops']:.3e}",
        f"tokens/s per device {e['tokens_per_second_per_device']:,.0f}",
        f"device-hours        {e['device_hours']:,.0f}",
        f"wall clock          {e['wall_clock_days']:,.1f} days",
        f"energy              {e['energy_kwh']:,.0f} kWh (devices; x PUE for the facility)",
        f"emissions           {e['tco2eq']:,.2f} tCO2eq",
    ])


def main(args: CarbonArgs) -> dict:
    planned = (args.model, args.tokens, args.accelerator)
    if all(value is None for value in planned):
        table = table_2_reproduced(args.pue, args.intensity)
        print("Llama 2 Table 2 recomputed: GPU-hours x power x PUE x intensity (2 dp truncated, as published)")
        print(table_2_markdown(table))
        return table
    if any(value is None for value in planned):
        raise UserError("an estimate needs all of --model, --tokens and --accelerator")
    model = preset_named(args.model)
    accelerator = accelerator_named(args.accelerator)
    if not args.tokens > 0:
        raise UserError(f"--tokens {args.tokens}: must be positive")
    if not 0 < args.mfu <= 1:
        raise UserError(f"--mfu {args.mfu}: must be in (0, 1]")
    if args.num_devices < 1:
        raise UserError(f"--num-devices {args.num_devices}: must be at least 1")
    if args.watts is not None and not args.watts > 0:
        raise UserError(f"--watts {args.watts}: must be positive")
    if args.seq_len is not None and args.seq_len < 1:
        raise UserError(f"--seq-len {args.seq_len}: must be at least 1")
    estimate = estimate_run(
        model, args.tokens, accelerator, args.num_devices, args.mfu, args.watts,
        args.seq_len, args.attention_flops, args.pue, args.intensity,
    )
    print(estimate_text(estimate))
    return estimate

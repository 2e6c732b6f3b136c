"""Compute and carbon (Llama 2 §2.2.1, Table 2): the paper's rows recomputed, the 7B run's implied
MFU and throughput, device power lookup, and the per-run record, against numbers worked by hand."""

import pytest
import tyro

from llamaforge.carbon import (
    ACCELERATORS,
    CPU_WATTS,
    UNKNOWN_GPU_WATTS,
    CarbonArgs,
    compute_record,
    device_power_watts,
    energy_kwh,
    estimate_run,
    find_accelerator,
    implied_mfu,
    main,
    table_2_reproduced,
    tco2eq,
)
from llamaforge.config import llama2_7b
from llamaforge.errors import UserError


def test_paper_constants_give_0_4235_kg_per_device_kwh():
    # 1 device for 1000 h at 1000 W = 1000 kWh; x 1.1 x 0.385 kg = 423.5 kg.
    assert energy_kwh(1000, 1000) == 1000
    assert tco2eq(1000, 1000) == pytest.approx(0.4235)


# By hand: GPU-hours x kW x 1.1 x 0.385 / 1000 tonnes.
#   7B:    184,320 x 0.40 = 73,728.0 kWh  -> 31.2238 t
#   13B:   368,640 x 0.40 = 147,456.0 kWh -> 62.4476 t (published 62.44: truncated, not rounded)
#   34B: 1,038,336 x 0.35 = 363,417.6 kWh -> 153.9074 t (published 153.90: truncated)
#   70B: 1,720,320 x 0.40 = 688,128.0 kWh -> 291.4222 t
#   total 539.0010 t (published 539.00; the published rows add up to 538.98)
@pytest.mark.parametrize(
    "model, exact, published",
    [("7B", 31.223808, 31.22), ("13B", 62.447616, 62.44), ("34B", 153.9073536, 153.90), ("70B", 291.422208, 291.42)],
)
def test_table_2_rows(model, exact, published):
    row = next(row for row in table_2_reproduced()["rows"] if row["model"] == model)
    assert row["tco2eq"] == pytest.approx(exact, abs=1e-6)
    assert abs(row["tco2eq"] - published) < 0.01
    assert row["tco2eq_2dp"] == published
    assert row["published_tco2eq"] == published


def test_table_2_total():
    total = table_2_reproduced()["total"]
    assert total["gpu_hours"] == 3_311_616
    assert total["tco2eq"] == pytest.approx(539.0009856, abs=1e-6)
    assert abs(total["tco2eq"] - 539.00) < 0.01
    assert total["tco2eq_2dp"] == 539.00


def test_7b_implied_mfu_and_throughput():
    # 2T tokens in 184,320 A100-hours = 2e12 / (184,320 x 3600) = 3,014.1 tokens/s per GPU.
    # 6N: 6 x 6.738e9 x 3,014.1 = 1.2186e14 FLOP/s = 39.1% of 312 TFLOP/s;
    # + attention 12 x 32 x 4096 x 4096 = 6.44e9 per token: 1.4128e14 FLOP/s = 45.3%.
    assert llama2_7b().num_parameters() == 6_738_415_616
    mfu_6n = implied_mfu("llama2_7b", 2e12, 184_320, "A100-80GB", attention=False)
    mfu = implied_mfu("llama2_7b", 2e12, 184_320, "A100-80GB")
    assert mfu_6n == pytest.approx(0.3906, abs=1e-3)
    assert mfu == pytest.approx(0.4528, abs=1e-3)
    for attention, utilisation in ((True, mfu), (False, mfu_6n)):
        estimate = estimate_run(llama2_7b(), 2e12, "A100-80GB", mfu=utilisation, attention=attention)
        assert estimate["device_hours"] == pytest.approx(184_320, rel=0.01)
        assert estimate["tokens_per_second_per_device"] == pytest.approx(3_014, rel=0.001)
        assert estimate["tco2eq"] == pytest.approx(31.22, abs=0.01)


def test_estimate_arithmetic():
    # smoke on H100 at 50% MFU, 8 devices: all derived quantities follow from FLOPs / (peak x MFU).
    estimate = estimate_run("smoke", 1e9, "H100", num_devices=8, mfu=0.5, seq_len=256)
    per_token = 6 * 164_160 + 12 * 2 * 64 * 256
    assert estimate["flops"] == per_token * 1e9
    assert estimate["device_hours"] == pytest.approx(per_token * 1e9 / (989e12 * 0.5) / 3600)
    assert estimate["wall_clock_days"] == pytest.approx(estimate["device_hours"] / 8 / 24)
    assert estimate["energy_kwh"] == pytest.approx(estimate["device_hours"] * 0.7)
    assert estimate["tco2eq"] == pytest.approx(estimate["energy_kwh"] * 1.1 * 0.385 / 1000)


@pytest.mark.parametrize(
    "device_name, watts",
    [
        ("NVIDIA A100-SXM4-80GB", 400),
        ("NVIDIA A100-SXM4-40GB", 400),
        ("NVIDIA A100 80GB PCIe", 300),
        ("NVIDIA H100 80GB HBM3", 700),
        ("NVIDIA H100 PCIe", 350),
        ("NVIDIA H200", 700),
        ("Tesla V100-SXM2-16GB", 300),
        ("NVIDIA L4", 72),
        ("AMD Instinct MI300X", 750),
        ("nvidia h100 80gb hbm3", 700),
        ("NVIDIA L40S", UNKNOWN_GPU_WATTS),  # not an L4
        ("NVIDIA GH200 480GB", UNKNOWN_GPU_WATTS),  # not an H200
        ("NVIDIA GeForce RTX 4090", UNKNOWN_GPU_WATTS),
        (None, UNKNOWN_GPU_WATTS),
    ],
)
def test_device_power_lookup(device_name, watts):
    assert device_power_watts(device_name, None, is_cuda=True) == watts


def test_device_power_override_and_cpu():
    assert device_power_watts("NVIDIA H100 80GB HBM3", 500, is_cuda=True) == 500
    assert device_power_watts(None, None, is_cuda=False) == CPU_WATTS == 65
    assert device_power_watts("cpu", 15, is_cuda=False) == 15
    with pytest.raises(UserError, match="--watts"):
        device_power_watts(None, 0, is_cuda=False)


def test_every_table_name_finds_its_own_row():
    for accelerator in ACCELERATORS:
        assert find_accelerator(accelerator.name) is accelerator
        assert find_accelerator(accelerator.name.lower()) is accelerator


def test_compute_record_by_hand():
    # 2 GPUs x 30 min = 1 GPU-hour; x 700 W = 0.7 kWh; x 1.1 x 0.385 = 0.29645 kg = 2.9645e-4 t.
    record = compute_record(1800, 2, 700)
    assert record.keys() == {"device_hours", "energy_kwh", "tco2eq"}
    assert record["device_hours"] == pytest.approx(1.0)
    assert record["energy_kwh"] == pytest.approx(0.7)
    assert record["tco2eq"] == pytest.approx(0.29645e-3)
    assert compute_record(1800, 2, 700, pue=1.0, intensity=0.0)["tco2eq"] == 0


def test_main_without_options_prints_table_2(capsys):
    table = main(tyro.cli(CarbonArgs, args=[]))
    assert [row["model"] for row in table["rows"]] == ["7B", "13B", "34B", "70B"]
    assert table["total"]["tco2eq_2dp"] == 539.00
    out = capsys.readouterr().out
    assert "| 34B | 1,038,336 | 350 | 153.90 | 153.90 |" in out
    assert "| total | 3,311,616 |  | 539.00 | 539.00 |" in out


def test_main_estimate(capsys):
    flags = "--model llama2_7b --tokens 2e12 --accelerator a100 --num-devices 2048 --mfu 0.4528"
    args = tyro.cli(CarbonArgs, args=flags.split())
    estimate = main(args)
    assert estimate["device"] == "A100-80GB"
    assert estimate["device_hours"] == pytest.approx(184_320, rel=0.01)
    assert estimate["wall_clock_days"] == pytest.approx(184_320 / 2048 / 24, rel=0.01)
    assert "tCO2eq" in capsys.readouterr().out


@pytest.mark.parametrize(
    "flags, message",
    [
        ("--model llama2_9b --tokens 1e9 --accelerator H100", "unknown model preset 'llama2_9b' .*llama2_7b"),
        ("--model smoke --tokens 1e9 --accelerator TPUv5", "unknown accelerator 'TPUv5' .*H100"),
        ("--model smoke --tokens 1e9", "needs all of"),
        ("--model smoke --tokens 1e9 --accelerator H100 --mfu 1.5", "--mfu"),
        ("--model smoke --tokens 0 --accelerator H100", "--tokens"),
        ("--model smoke --tokens 1e9 --accelerator H100 --num-devices 0", "--num-devices"),
    ],
)
def test_main_bad_input(flags, message):
    with pytest.raises(UserError, match=message):
        main(tyro.cli(CarbonArgs, args=flags.split()))

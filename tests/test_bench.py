"""The GPU scripts run end to end on the CPU (tiny shapes), so that they are ready for a GPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def test_gpu_benchmark_smoke_run_writes_every_row(tmp_path):
    out = tmp_path / "gpu.json"
    subprocess.run(
        [sys.executable, str(BENCH / "gpu.py"), "--smoke", "--no-compile", "--repeats", "1", "--decode-repeats", "1",
         "--json", str(out)],
        check=True, cwd=BENCH, capture_output=True, text=True, timeout=300,
    )
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["matmul_peak_tflops"] > 0 and results["copy_bandwidth_tb_s"] > 0
    train = results["train"]
    for name in ("ours", "transformers"):
        assert train[f"eager_{name}"]["tokens_per_s"] > 0
    assert train["eager_ratio"] == train["eager_ours"]["tokens_per_s"] / train["eager_transformers"]["tokens_per_s"]
    decode = results["decode"]
    for batch in (1, 4):
        for key in ("ours_plain", "transformers_eager", "transformers_static"):
            row = decode[f"b{batch}_{key}"]
            assert row["tokens_per_s"] > 0 and 0 < row["bandwidth_fraction"] < 1
        assert decode[f"b{batch}_ratio_vs_best"] > 0


@pytest.mark.slow  # about 1.5 minutes on 2 cores, most of it compiling
def test_gpu_check_passes_on_the_cpu():
    result = subprocess.run(
        [sys.executable, str(BENCH / "gpu_check.py")], cwd=BENCH, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "5/5 checks passed" in result.stdout


def test_rejection_sampling_benchmark_smoke_run(tmp_path):
    out = tmp_path / "rejection.json"
    subprocess.run(
        [sys.executable, str(BENCH / "rejection_sampling.py"), "--smoke", "--json", str(out)],
        check=True, cwd=BENCH, capture_output=True, text=True, timeout=300,
    )
    results = json.loads(out.read_text())
    assert (results["prompts"], results["k"], results["new_tokens"]) == (4, 2, 8)
    assert results["ours_tokens_per_s"] > 0 and results["transformers_tokens_per_s"] > 0
    assert results["ratio"] == results["ours_tokens_per_s"] / results["transformers_tokens_per_s"]

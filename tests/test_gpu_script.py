"""benchmarks/gpu.py never rots: its tiny version runs on the CPU (fit in two precisions, sampling, training)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def test_the_gpu_benchmark_runs_tiny_on_the_cpu(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    text = gpu.main(["--tiny", "--precisions", "32-true", "bf16-mixed", "--fit-steps", "2", "--steps", "2",
                     "--sample-batches", "1", "2", "--train-batch", "2", "--train-iters", "1"])  # fmt: skip
    rows = [line for line in text.splitlines() if line.startswith("| fit")]
    assert len(rows) == 2 and all(row.rstrip().endswith("| ok |") for row in rows), rows
    assert sum(line.startswith("| sample T=2") for line in text.splitlines()) == 2
    assert any(line.startswith("| train") and "img/s" in line for line in text.splitlines())

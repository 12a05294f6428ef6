"""neurop_diff.runtime: the CPU allocator setting really stops large tensors from faulting in fresh pages."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from neurop_diff.runtime import tune_cpu_allocator

# Counts the page faults of ten rounds of 64 MiB temporaries (the pattern of a UNet step's activations).
PROBE = """
import resource, torch
from neurop_diff.runtime import tune_cpu_allocator
applied = tune_cpu_allocator()
x = torch.ones(16 * 2**20)
for _ in range(2):
    y = x * 2; z = y + 1; del y, z
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(10):
    y = x * 2; z = y + 1; del y, z
print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _probe(env: dict[str, str]) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], env={**os.environ, **env}, capture_output=True, text=True, check=True
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_tuned_allocator_reuses_large_blocks():
    applied, faults = _probe({})
    default, default_faults = _probe({"NEUROP_DIFF_MALLOC": "default"})
    assert (applied, default) == ("True", "False")
    pages = 64 * 2**20 // os.sysconf("SC_PAGE_SIZE")
    # glibc by default: a fresh mmap per temporary, all its pages faulted in again (2 x 10 x 64 MiB)
    assert default_faults > 10 * pages
    # tuned: the freed heap blocks are reused (measured 5x fewer; the kernel may still reclaim some pages)
    assert faults < default_faults / 3


def test_tune_is_applied_once():
    assert tune_cpu_allocator() is tune_cpu_allocator()


LIBRARY = """
import torch
from neurop_diff.models import SRNO
from neurop_diff.runtime import tune_cpu_allocator
from neurop_diff.inference import load_model
assert tune_cpu_allocator.cache_info().currsize == 0  # importing the library changes nothing
load_model(SRNO(encoder_blocks=1, encoder_width=8, width=16, blocks=1, heads=2), "cpu")
print(tune_cpu_allocator.cache_info().currsize, tune_cpu_allocator())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_the_python_api_tunes_the_allocator_on_first_use():
    run = subprocess.run(
        [sys.executable, "-c", LIBRARY], capture_output=True, text=True, check=True, env={**os.environ}
    )
    assert run.stdout.split() == ["1", "True"]
    opted_out = {**os.environ, "NEUROP_DIFF_MALLOC": "default"}
    run = subprocess.run(
        [sys.executable, "-c", LIBRARY], capture_output=True, text=True, check=True, env=opted_out
    )
    assert run.stdout.split() == ["1", "False"]

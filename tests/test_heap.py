"""The heap policies: whole-clip passes reuse freed activations instead of faulting in fresh pages."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

# The model's modules are loaded first, as in any real pass (the package no longer loads
# them on import): what else sits in the address space decides where glibc's heap can grow.
CHURN = """
import json, resource, torch, wanvae.model.vae, wanvae.coding.heap as h

def faults():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(12):  # an activation per layer: allocated, written, freed
        x = torch.empty(48 << 18)  # 48 MB, above glibc's largest mmap threshold
        x.fill_(1.0)
        del x
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

outside = faults()
with h.reuse_heap():
    inside = faults()
print(json.dumps({"outside": outside, "inside": inside}))
"""


def _churn(env: dict) -> dict:
    out = subprocess.run([sys.executable, "-c", CHURN], capture_output=True, text=True, check=True, env=env)
    return json.loads(out.stdout)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's policy")
def test_reuse_heap_reuses_freed_blocks_unless_the_user_chose_a_policy():
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    counts = _churn(clean)
    # Outside, each 48 MB block is a fresh mmap faulted in page by page (12k faults each);
    # inside, the first blocks' pages are reused by those after them.
    assert counts["outside"] > 12 * (48 << 8) * 8 // 10, counts
    assert counts["inside"] < counts["outside"] / 3, counts
    chosen = _churn({**clean, "MALLOC_MMAP_MAX_": "65536"})
    assert chosen["inside"] > chosen["outside"] / 2, chosen


def test_reuse_heap_gives_memory_back_and_restores_mmap():
    script = """
import torch, wanvae.coding.heap as h
def rss():
    return int(next(l for l in open('/proc/self/status') if l.startswith('VmRSS')).split()[1]) // 1024
base = rss()
with h.reuse_heap():
    for _ in range(3):
        x = torch.ones(64 << 18); del x
    held = rss()
after = rss()
print(held - base, after - base)
"""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True, env=clean)
    held, after = (int(v) for v in out.stdout.split())
    if sys.platform.startswith("linux"):
        assert held >= 60, (held, after)  # kept for reuse inside the block
    assert after < 10, (held, after)  # and handed back on exit


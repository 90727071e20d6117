"""The oracle probe's router fit: it must reach gates a linear router can produce, so that a plateau it reports
on a real MoE is a property of the router inputs, not of the solver."""

import importlib.util
from pathlib import Path

import torch

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "probe_router_oracle.py"


def _probe():
    spec = importlib.util.spec_from_file_location("probe_router_oracle", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_fit_reproduces_gates_that_a_linear_router_makes():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 8, generator=g)
    target = (x @ torch.randn(3, 8, generator=g).T).softmax(-1)
    fit = _probe().fit_router(x, target, bias=False)
    assert fit["kl"] < 1e-3


def test_the_fit_reports_the_leak_that_no_linear_router_avoids():
    # expert 1 must take every token whose first feature lies in a middle band, expert 0 the rest: no linear
    # map of x can switch an expert on in a band and off on both sides of it
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 4, generator=g)
    band = x[:, 0].abs() < 0.5
    target = torch.stack([(~band).float(), band.float()], 1)
    fit = _probe().fit_router(x, target, bias=True)
    assert fit["off"] > 0.15 and fit["off>0.2"] > 0.2

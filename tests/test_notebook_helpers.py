"""The notebooks' helpers: the scale switch and the tolerance of their equality checks."""

from __future__ import annotations

import pytest
import torch

from metalearn_lib.notebook import GPU_TOLERANCE, check_tolerance, get_scale


def test_cpu_checks_keep_float32_tolerances():
    assert check_tolerance("cpu") == {"rtol": 1.3e-6, "atol": 1e-5}
    assert check_tolerance(torch.device("cpu"), rtol=1e-4, atol=1e-5) == {"rtol": 1e-4, "atol": 1e-5}


def test_gpu_checks_allow_tf32_rounding_but_not_a_mistake():
    tol = check_tolerance("cuda")
    assert tol == {"rtol": GPU_TOLERANCE, "atol": GPU_TOLERANCE}
    assert check_tolerance("cuda", rtol=0.01)["rtol"] == 0.01   # a looser request is kept
    torch.manual_seed(0)
    logits = 3 * torch.randn(75, 5)
    # differences of the size measured on an H200 between two paths (up to 1.6e-4)
    tf32_like = logits + 1.6e-4 * torch.randn_like(logits).clamp(-1, 1)
    torch.testing.assert_close(tf32_like, logits, **tol)
    with pytest.raises(AssertionError):
        torch.testing.assert_close(tf32_like, logits, **check_tolerance("cpu"))
    wrong = logits.clone()
    wrong[3, 1] += 0.05   # e.g. a missing term in a gradient
    with pytest.raises(AssertionError):
        torch.testing.assert_close(wrong, logits, **tol)


def test_scale_switch_rejects_an_unknown_scale(monkeypatch):
    monkeypatch.setenv("METALEARN_SCALE", "huge")
    with pytest.raises(ValueError, match="quick"):
        get_scale()
    monkeypatch.setenv("METALEARN_SCALE", "Full")
    assert get_scale() == "full"

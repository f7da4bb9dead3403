import pytest
import torch

from src.train.losses import kd_loss

T = 3.0


def _logits() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(2, 8, 2, generator=g) * 3
    return s, t, torch.randint(0, 2, (8,), generator=g)


def test_hard_and_soft_match_hand_computation():
    s, t, y = _logits()
    total, hard, soft = kd_loss(s, t, y, alpha=0.7, temperature=T)
    assert hard.item() == pytest.approx(-torch.log_softmax(s, 1)[torch.arange(8), y].mean().item(), abs=1e-6)
    p_s, p_t = torch.softmax(s / T, 1), torch.softmax(t / T, 1)
    expected_soft = (p_t * (p_t.log() - p_s.log())).sum(1).mean() * T**2  # batchmean: per-sample KL, not / classes
    assert soft.item() == pytest.approx(expected_soft.item(), abs=1e-6)
    assert total.item() == pytest.approx(0.7 * hard.item() + 0.3 * soft.item(), abs=1e-6)


def test_soft_is_zero_for_equal_logits():
    s, _, y = _logits()
    assert kd_loss(s, s.clone(), y, alpha=0.5, temperature=T)[2].item() == 0.0


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("magnitude,temperature", [(1e4, T), (1e4, 1.0), (6e4, 1.0)])  # 6e4 - (-6e4) overflows fp16
def test_large_logits_stay_finite(dtype, magnitude, temperature):
    s = torch.tensor([[1, -1], [-1, 1]], dtype=dtype).mul(magnitude).requires_grad_()
    t = torch.tensor([[-1, 1], [1, -1]], dtype=dtype).mul(magnitude)
    losses = kd_loss(s, t, torch.tensor([1, 0]), alpha=0.5, temperature=temperature)
    assert all(torch.isfinite(v) for v in losses)
    losses[0].backward()
    assert torch.isfinite(s.grad).all()


def test_gradient_flows_to_student_only():
    s, t, y = _logits()
    s.requires_grad_()
    t.requires_grad_()
    kd_loss(s, t, y, alpha=0.5, temperature=T)[0].backward()
    assert t.grad is None
    assert s.grad.abs().sum() > 0

import copy
import io
import warnings

import pytest
import torch
from torch import nn
from torch.func import functional_call

from src.train.sam import SAM, frozen_bn_stats

RHO, LR = 0.05, 0.1


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 2)).double()


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randn(16, 4, generator=g, dtype=torch.float64), torch.randint(0, 2, (16,), generator=g)


def _sam_step(model: nn.Module, opt: SAM, x: torch.Tensor, y: torch.Tensor) -> None:
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    opt.zero_grad()
    nn.functional.cross_entropy(model(x), y).backward()
    opt.second_step()
    opt.zero_grad()


@pytest.mark.parametrize("adaptive", [False, True])
def test_one_step_matches_hand_computation(adaptive):
    model, (x, y) = _mlp(), _data()
    names, w = zip(*[(n, p.detach().clone()) for n, p in model.named_parameters()])

    def grads(params):
        params = [p.requires_grad_() for p in params]
        loss = nn.functional.cross_entropy(functional_call(model, dict(zip(names, params)), (x,)), y)
        return torch.autograd.grad(loss, params)

    g1 = grads([p.clone() for p in w])
    if adaptive:
        norm = torch.cat([(p.abs() * g).flatten() for p, g in zip(w, g1)]).norm()
        w_adv = [p + RHO * p**2 * g / norm for p, g in zip(w, g1)]
    else:
        norm = torch.cat([g.flatten() for g in g1]).norm()
        w_adv = [p + RHO * g / norm for p, g in zip(w, g1)]
    g2 = grads([p.detach().clone() for p in w_adv])
    expected = [p - LR * g for p, g in zip(w, g2)]

    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, adaptive=adaptive, lr=LR)
    _sam_step(model, opt, x, y)
    for p, e in zip(model.parameters(), expected):
        torch.testing.assert_close(p.detach(), e, atol=1e-6, rtol=0)


def test_restore_returns_exact_weights_and_skips_params_without_grad():
    model, (x, y) = _mlp(), _data()
    model[2].bias.requires_grad_(False)
    before = [p.detach().clone() for p in model.parameters()]
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    nn.functional.cross_entropy(model(x), y).backward()
    opt.first_step()
    assert not torch.equal(model[0].weight, before[0])
    assert torch.equal(model[2].bias, before[3])
    opt.restore()
    for p, b in zip(model.parameters(), before):
        assert torch.equal(p, b)


def test_state_dict_round_trip_keeps_momentum():
    model, (x, y) = _mlp(), _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    for _ in range(2):
        _sam_step(model, opt, x, y)
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": opt.state_dict()}, buf)
    buf.seek(0)
    ckpt = torch.load(buf)
    assert all("momentum_buffer" in s for s in ckpt["opt"]["state"].values())
    assert ckpt["opt"]["param_groups"][0]["rho"] == RHO

    resumed = _mlp()
    resumed.load_state_dict(ckpt["model"])
    resumed_opt = SAM(resumed.parameters(), torch.optim.SGD, rho=0.5, lr=1.0, momentum=0.9)
    resumed_opt.load_state_dict(ckpt["opt"])
    assert resumed_opt.param_groups is resumed_opt.base_optimizer.param_groups
    _sam_step(model, opt, x, y)
    _sam_step(resumed, resumed_opt, x, y)
    for p, q in zip(model.parameters(), resumed.parameters()):
        assert torch.equal(p, q)


def test_lr_scheduler_drives_base_optimizer():
    model, (x, y) = _mlp(), _data()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: 0.5**e)
    _sam_step(model, opt, x, y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sched.step()
    assert opt.base_optimizer.param_groups[0]["lr"] == LR * 0.5


def test_step_raises():
    opt = SAM(_mlp().parameters(), torch.optim.SGD, lr=LR)
    with pytest.raises(RuntimeError, match="first_step"):
        opt.step()


def test_frozen_bn_stats_updates_running_stats_once_per_step():
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.BatchNorm2d(4, momentum=None),
        nn.Flatten(), nn.Linear(4 * 4 * 4, 2),
    ).train()
    opt = SAM(model.parameters(), torch.optim.SGD, rho=RHO, lr=LR, momentum=0.9)
    bns = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    for step in range(1, 4):
        x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 2, (8,))
        reference = copy.deepcopy(model)
        reference(x)  # one train-mode forward at the original weights
        nn.functional.cross_entropy(model(x), y).backward()
        opt.first_step()
        opt.zero_grad()
        with frozen_bn_stats(model):
            nn.functional.cross_entropy(model(x), y).backward()
        opt.second_step()
        opt.zero_grad()
        for bn, ref in zip(bns, [m for m in reference.modules() if isinstance(m, nn.BatchNorm2d)]):
            assert torch.equal(bn.running_mean, ref.running_mean)
            assert torch.equal(bn.running_var, ref.running_var)
            assert bn.num_batches_tracked.item() == step


@pytest.mark.parametrize("adaptive", [False, True])
def test_fused_and_per_parameter_paths_give_the_same_weights(adaptive):
    (x, y), models = _data(), [_mlp(), _mlp()]
    opts = [SAM(m.parameters(), torch.optim.SGD, rho=RHO, adaptive=adaptive, foreach=foreach, lr=LR, momentum=0.9)
            for m, foreach in zip(models, (True, False))]
    for _ in range(3):
        for model, opt in zip(models, opts):
            nn.functional.cross_entropy(model(x), y).backward()
            opt.first_step()
            opt.zero_grad()
            nn.functional.cross_entropy(model(x), y).backward()
            opt.clip_grad_norm_(0.1)
            opt.second_step()
            opt.zero_grad()
    for p, q in zip(*(m.parameters() for m in models)):
        torch.testing.assert_close(p, q, atol=1e-12, rtol=0)


@pytest.mark.parametrize("max_norm", [None, 0.01, 100.0])
def test_clip_grad_norm_matches_torch(max_norm):
    (x, y), models = _data(), [_mlp(), _mlp()]
    for model in models:
        nn.functional.cross_entropy(model(x), y).backward()
    norm = SAM(models[0].parameters(), torch.optim.SGD, lr=LR).clip_grad_norm_(max_norm)
    params = list(models[1].parameters())
    expected = nn.utils.clip_grad_norm_(params, max_norm) if max_norm else nn.utils.get_total_norm(
        [p.grad for p in params])
    torch.testing.assert_close(norm, expected)
    for p, q in zip(models[0].parameters(), params):
        torch.testing.assert_close(p.grad, q.grad, atol=1e-15, rtol=0)

"""Sharpness-Aware Minimization (Foret et al. 2021; adaptive variant: Kwon et al. 2021, ASAM).

The training step is two passes: loss and backward at w, `first_step()` moves to w + e(w), loss and backward
again (under `frozen_bn_stats`), then `second_step()` returns to w and lets the base optimizer step.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.optimizer import ParamsT


class SAM(torch.optim.Optimizer):
    """SAM wrapping a base optimizer that shares its param groups, so LR schedulers on SAM drive the base lr."""

    def __init__(
        self, params: ParamsT, base_optimizer_cls: type[torch.optim.Optimizer], rho: float = 0.05,
        adaptive: bool = False, **base_kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups

    @torch.no_grad()
    def first_step(self) -> None:
        """Save w and move to w + e(w), e(w) = rho * g / ||g|| (ASAM: rho * w^2 * g / ||w * g||); global norm."""
        with_grad = [(p, group) for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not with_grad:
            return
        device = with_grad[0][0].device
        norm = torch.linalg.vector_norm(torch.stack([  # low-precision grads: norms in float32 (no fp16 overflow)
            torch.linalg.vector_norm(
                (p.abs() if group["adaptive"] else 1.0) * p.grad, dtype=torch.promote_types(p.dtype, torch.float32)
            ).to(device)
            for p, group in with_grad
        ]))
        for p, group in with_grad:
            scale = (group["rho"] / (norm + 1e-12)).to(p)
            self.state[p]["old_p"] = p.clone()
            p.add_((p.square() if group["adaptive"] else 1.0) * p.grad * scale)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights saved by `first_step` (no-op when none are saved)."""
        for group in self.param_groups:
            for p in group["params"]:
                old_p = self.state[p].pop("old_p", None)
                if old_p is not None:
                    p.copy_(old_p)

    def second_step(self) -> None:
        """Return to w and step the base optimizer with the gradient taken at w + e(w)."""
        self.restore()
        self.base_optimizer.step()
        self._opt_called = True  # LR schedulers read this flag (normally set by step()) to check call order

    def step(self, closure: Any = None) -> None:
        """Not supported: SAM needs two forward/backward passes."""
        raise RuntimeError(
            "SAM.step() is not supported: call first_step() after the first backward, recompute the loss and "
            "backward at the perturbed weights, then call second_step()"
        )

    def state_dict(self) -> dict[str, Any]:
        """The base optimizer's state (momentum buffers) and the shared param groups (with rho, adaptive)."""
        return self.base_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Load a `state_dict()` into the base optimizer and share its new param groups again."""
        self.base_optimizer.load_state_dict(state_dict)
        self.param_groups = self.base_optimizer.param_groups  # loading builds new group dicts


def bn_stats(model: torch.nn.Module) -> list[tuple[_BatchNorm, dict[str, torch.Tensor]]]:
    """A copy of every BatchNorm's running_mean, running_var and num_batches_tracked."""
    return [(m, {k: getattr(m, k).clone() for k in ("running_mean", "running_var", "num_batches_tracked")
                 if getattr(m, k) is not None})
            for m in model.modules() if isinstance(m, _BatchNorm)]


@torch.no_grad()
def restore_bn_stats(saved: list[tuple[_BatchNorm, dict[str, torch.Tensor]]]) -> None:
    """Copy a `bn_stats` snapshot back in place (DDP keeps references to the buffers)."""
    for m, buffers in saved:
        for k, v in buffers.items():
            getattr(m, k).copy_(v)


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module) -> Iterator[None]:
    """Restore every BatchNorm's running_mean, running_var and num_batches_tracked on exit.

    Wrap SAM's second forward and backward in it (the backward needs the buffers it saw, so they are restored
    after it): that pass still runs in train mode and normalises with batch statistics, but its statistics come
    from the perturbed weights w + e(w) and the batch was already counted in the first pass, so the running
    statistics must be updated there only. Setting momentum=0 instead still increments num_batches_tracked,
    which shifts the 1 / num_batches_tracked cumulative average of momentum=None layers.
    """
    saved = bn_stats(model)
    try:
        yield
    finally:
        restore_bn_stats(saved)

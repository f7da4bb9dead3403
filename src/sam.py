"""Sharpness-Aware Minimization (Foret et al. 2021; adaptive variant: Kwon et al. 2021, ASAM).

The training step is two passes: loss and backward at w, `first_step()` moves to w + e(w), loss and backward
again (under `frozen_bn_stats`), then `second_step()` returns to w and lets the base optimizer step.
"""
from __future__ import annotations

import contextlib
from functools import reduce
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
        self._saved: list | None = None  # (params, copies of w) per group, between first_step and restore

    @torch.no_grad()
    def first_step(self) -> None:
        """Save w and move to w + e(w), e(w) = rho * g / ||g|| (ASAM: rho * w^2 * g / ||w * g||); global norm.

        Each part is one fused multi-tensor operation over all parameters (no Python loop of small kernels).
        """
        groups = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
        groups = [(group, params) for group, params in groups if params]
        if not groups:
            return
        absw = [torch._foreach_abs(params) if group["adaptive"] else None for group, params in groups]
        scaled = [[p.grad for p in params] if a is None else torch._foreach_mul([p.grad for p in params], a)
                  for (_, params), a in zip(groups, absw)]  # g, or ASAM's |w| g
        flat = [g for part in scaled for g in part]  # low-precision grads: norms in float32 (no fp16 overflow)
        norms = torch._foreach_norm(flat, 2, dtype=reduce(torch.promote_types, {g.dtype for g in flat}, torch.float32))
        norm = torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))
        self._saved = [(params, torch._foreach_mul(params, 1.0)) for _, params in groups]
        for (group, params), grads, a in zip(groups, scaled, absw):
            step = grads if a is None else torch._foreach_mul(grads, a)  # ASAM: w^2 g
            torch._foreach_add_(params, torch._foreach_mul(step, (group["rho"] / (norm + 1e-12)).to(params[0])))

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights saved by `first_step` (no-op when none are saved)."""
        for params, old in self._saved or []:
            torch._foreach_copy_(params, old)
        self._saved = None

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


class BNStats:
    """Every BatchNorm's running_mean, running_var and num_batches_tracked: `save()` copies them aside and
    `restore()` copies them back in place (DDP keeps references to the buffers), each one fused operation."""

    def __init__(self, model: torch.nn.Module):
        self.buffers = [b for m in model.modules() if isinstance(m, _BatchNorm)
                        for b in (m.running_mean, m.running_var, m.num_batches_tracked) if b is not None]
        self.saved = [b.clone() for b in self.buffers]

    @torch.no_grad()
    def save(self) -> "BNStats":
        if self.buffers:
            torch._foreach_copy_(self.saved, self.buffers)
        return self

    @torch.no_grad()
    def restore(self) -> None:
        if self.buffers:
            torch._foreach_copy_(self.buffers, self.saved)


@contextlib.contextmanager
def frozen_bn_stats(model: torch.nn.Module, stats: BNStats | None = None) -> Iterator[None]:
    """Restore every BatchNorm's running_mean, running_var and num_batches_tracked on exit (`stats`: a reusable
    BNStats of `model`).

    Wrap SAM's second forward and backward in it (the backward needs the buffers it saw, so they are restored
    after it): that pass still runs in train mode and normalises with batch statistics, but its statistics come
    from the perturbed weights w + e(w) and the batch was already counted in the first pass, so the running
    statistics must be updated there only. Setting momentum=0 instead still increments num_batches_tracked,
    which shifts the 1 / num_batches_tracked cumulative average of momentum=None layers.
    """
    stats = (stats or BNStats(model)).save()
    try:
        yield
    finally:
        stats.restore()

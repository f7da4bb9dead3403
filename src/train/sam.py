"""Sharpness-Aware Minimization (Foret et al. 2021; adaptive variant: Kwon et al. 2021, ASAM).

The training step is two passes: loss and backward at w, `first_step()` moves to w + e(w), loss and backward
again (under `frozen_bn_stats`), then `second_step()` returns to w and lets the base optimizer step.
"""
from __future__ import annotations

import contextlib
from functools import reduce
from typing import Any, Callable, Iterator

import torch
from torch.nn.modules.batchnorm import _BatchNorm
from torch.optim.optimizer import ParamsT


class SAM(torch.optim.Optimizer):
    """SAM wrapping a base optimizer that shares its param groups, so LR schedulers on SAM drive the base lr.

    Each of SAM's operations (perturb, restore, clip) and the base optimizer's step run as fused multi-tensor
    operations over all parameters (torch._foreach_*), on the CPU too, and never read the device from the host;
    the copies of w it restores are allocated once, at the first step.
    foreach=False runs the same operations one parameter at a time (src.bench_train compares the two).
    """

    def __init__(
        self, params: ParamsT, base_optimizer_cls: type[torch.optim.Optimizer], rho: float = 0.05,
        adaptive: bool = False, foreach: bool = True, **base_kwargs: Any,
    ) -> None:
        if rho < 0:
            raise ValueError(f"SAM rho must be >= 0, got {rho}")
        super().__init__(params, dict(rho=rho, adaptive=adaptive, **base_kwargs))
        self.base_optimizer = base_optimizer_cls(self.param_groups, foreach=foreach, **base_kwargs)
        self.param_groups = self.base_optimizer.param_groups
        self.foreach = foreach
        self._copies: dict[torch.Tensor, torch.Tensor] = {}  # w's copy per parameter, allocated once
        self._saved: list | None = None  # (params, copies of w) per group, between first_step and restore

    def _each(self, op: Callable, *args: Any, **kwargs: Any) -> Any:
        """`op`, a torch._foreach_* operation, over its list arguments at once, or one element at a time."""
        if self.foreach:
            return op(*args, **kwargs)
        out = [op(*([a[i]] if isinstance(a, list) else a for a in args), **kwargs) for i in range(len(args[0]))]
        return None if out[0] is None else [o[0] for o in out]

    def _copy_of(self, p: torch.Tensor) -> torch.Tensor:
        if p not in self._copies:
            self._copies[p] = torch.empty_like(p)
        return self._copies[p]

    def _norm(self, tensors: list[torch.Tensor], **kwargs: Any) -> torch.Tensor:
        """The 2-norm of all `tensors` together, a tensor on their device."""
        norms = self._each(torch._foreach_norm, tensors, 2, **kwargs)
        return torch.linalg.vector_norm(torch.stack([n.to(norms[0].device) for n in norms]))

    def _with_grad(self) -> list[tuple[dict, list[torch.Tensor]]]:
        groups = [(group, [p for p in group["params"] if p.grad is not None]) for group in self.param_groups]
        return [(group, params) for group, params in groups if params]

    @torch.no_grad()
    def first_step(self) -> None:
        """Save w and move to w + e(w), e(w) = rho * g / ||g|| (ASAM: rho * w^2 * g / ||w * g||); global norm.

        The gradients are scaled in place into e(w): zero them before the second backward.
        """
        groups = self._with_grad()
        if not groups:
            return
        absw = [self._each(torch._foreach_abs, params) if group["adaptive"] else None for group, params in groups]
        scaled = [[p.grad for p in params] if a is None else self._each(torch._foreach_mul, [p.grad for p in params], a)
                  for (_, params), a in zip(groups, absw)]  # g, or ASAM's |w| g (a new tensor: g stays)
        flat = [g for part in scaled for g in part]  # low-precision grads: norms in float32 (no fp16 overflow)
        norm = self._norm(flat, dtype=reduce(torch.promote_types, {g.dtype for g in flat}, torch.float32))
        self._saved = [(params, [self._copy_of(p) for p in params]) for _, params in groups]
        for (group, params), (_, copies), step, a in zip(groups, self._saved, scaled, absw):
            self._each(torch._foreach_copy_, copies, params)
            if a is not None:
                self._each(torch._foreach_mul_, step, a)  # ASAM: w^2 g
            self._each(torch._foreach_mul_, step, (group["rho"] / (norm + 1e-12)).to(params[0]))
            self._each(torch._foreach_add_, params, step)

    @torch.no_grad()
    def restore(self) -> None:
        """Put back the exact weights saved by `first_step` (no-op when none are saved)."""
        for params, old in self._saved or []:
            self._each(torch._foreach_copy_, params, old)
        self._saved = None

    @torch.no_grad()
    def clip_grad_norm_(self, max_norm: float | None) -> torch.Tensor:
        """The gradients' global norm (a tensor: no host sync), clipped in place to `max_norm` when given, as
        torch.nn.utils.clip_grad_norm_ does (which loops over the parameters on the CPU)."""
        grads = [p.grad for _, params in self._with_grad() for p in params]
        if not grads:
            return torch.zeros(())
        norm = self._norm(grads)
        if max_norm:
            self._each(torch._foreach_mul_, grads, torch.clamp(max_norm / (norm + 1e-6), max=1.0).to(grads[0].device))
        return norm

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

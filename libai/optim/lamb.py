"""LAMB, the layer-wise adaptive optimizer LiBai's ResMLP config trains with.

torch has no LAMB; LiBai's config names OneFlow's (`flow.optim.LAMB`), so a ported config
names this one (`libai.optim.LAMB`), which takes OneFlow's arguments.
"""
from __future__ import annotations

from typing import Any, Callable, Iterable, Optional

import torch

__all__ = ["LAMB"]


class LAMB(torch.optim.Optimizer):
    """Adam's moments with a per-parameter trust ratio (You et al., 2019).

    Each step computes Adam's update ``u = m_hat / (sqrt(v_hat) + eps)`` (plus
    ``weight_decay * w`` in AdamW mode) and moves the parameter by
    ``lr * (||w|| / ||u||) * u``; the ratio is 1 where either norm is zero, so fresh
    zero-initialised parameters still move. Norms are over the whole parameter, also when
    it is a tensor-parallel shard (DTensor reduces them).

    Args:
        params: parameters or param groups.
        lr: learning rate.
        betas: decay rates of the first and second moments.
        eps: added to the denominator.
        weight_decay: decoupled decay inside the update (``adam_w_mode=True``) or an L2 term
            added to the gradient (``adam_w_mode=False``).
        adam_w_mode: see ``weight_decay``.
        do_bias_correction: divide the moments by ``1 - beta ** step``.
        amsgrad: use the running maximum of the second moment.
    """

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        adam_w_mode: bool = True,
        do_bias_correction: bool = True,
        amsgrad: bool = False,
    ) -> None:
        beta1, beta2 = betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise ValueError(f"LAMB betas must be in [0, 1), got {tuple(betas)}")
        if lr < 0 or eps < 0 or weight_decay < 0:
            raise ValueError(f"LAMB lr, eps and weight_decay must be >= 0, got {lr}, {eps}, {weight_decay}")
        defaults = dict(
            lr=lr,
            betas=(beta1, beta2),
            eps=eps,
            weight_decay=weight_decay,
            adam_w_mode=adam_w_mode,
            do_bias_correction=do_bias_correction,
            amsgrad=amsgrad,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure: Optional[Callable[[], float]] = None) -> Optional[float]:
        """One update of every parameter that has a gradient."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            for param in group["params"]:
                if param.grad is not None:
                    self._update(param, group)
        return loss

    def _update(self, param: torch.Tensor, group: dict) -> None:
        beta1, beta2 = group["betas"]
        decay = group["weight_decay"]
        grad = param.grad
        if decay and not group["adam_w_mode"]:
            grad = grad.add(param, alpha=decay)
        state = self.state[param]
        if not state:
            state["step"] = 0
            state["exp_avg"] = torch.zeros_like(param)
            state["exp_avg_sq"] = torch.zeros_like(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = torch.zeros_like(param)
        state["step"] += 1
        exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
        exp_avg.mul_(beta1).add_(grad, alpha=1 - beta1)
        exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        second = exp_avg_sq
        if group["amsgrad"]:
            torch.maximum(state["max_exp_avg_sq"], exp_avg_sq, out=state["max_exp_avg_sq"])
            second = state["max_exp_avg_sq"]
        first_scale, second_scale = 1.0, 1.0
        if group["do_bias_correction"]:
            first_scale = 1 - beta1 ** state["step"]
            second_scale = 1 - beta2 ** state["step"]
        update = (exp_avg / first_scale) / ((second / second_scale).sqrt() + group["eps"])
        if decay and group["adam_w_mode"]:
            update.add_(param, alpha=decay)
        weight_norm = torch.linalg.vector_norm(param)
        update_norm = torch.linalg.vector_norm(update)
        # Ratio 1 where a norm is zero (a zero-initialised weight, or no update at all).
        trust = torch.where(
            (weight_norm > 0) & (update_norm > 0), weight_norm / update_norm.clamp_min(1e-38), torch.ones_like(weight_norm)
        )
        param.sub_(update * (trust * group["lr"]))

"""Muon: momentum made orthogonal, for the hidden weight matrices (Jordan et al. 2024).

Adam scales every coordinate of the update on its own. Muon treats a weight matrix as
a linear map and updates it by the nearest semi-orthogonal matrix to its momentum:
the momentum's singular vectors with every singular value set to one. No direction of
the map then learns faster than another, which in published nanoGPT speed-runs trains
the same loss in fewer tokens than AdamW.

For a weight ``W`` (a ``(rows, cols)`` matrix) with gradient ``G`` at step t:

    B_t = mu B_{t-1} + G_t                        momentum (mu = 0.95)
    M   = G_t + mu B_t                            Nesterov's look-ahead
    O   = orthogonalize(M)                        ~ U V^T of M = U S V^T
    W  <- W (1 - lr wd) - lr 0.2 sqrt(max(rows, cols)) O

``orthogonalize`` runs five steps of a quintic Newton-Schulz iteration instead of an
SVD (matrix products only). The factor 0.2 sqrt(max(rows, cols)) gives the update the
root-mean-square size of a typical AdamW update (Liu et al. 2025, "Muon is Scalable for
LLM Training", §2.2), so the learning rate and weight decay tuned for AdamW carry over.

Muon is defined for the matrices inside the layers only. Embeddings, the output head,
biases and norm gains keep AdamW; :class:`Muon` holds both kinds of parameter group
(``"muon": True`` or ``False``) so that the trainer, its schedule and its checkpoints
see one optimizer.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor
from torch.optim.adamw import adamw

# Coefficients (a, b, c) of the quintic p(s) = a s + b s^3 + c s^5 that the iteration applies
# to every singular value s: chosen by Jordan et al. to push all of (0, 1] close to 1 within five
# steps (they land in about [0.7, 1.2], which trains as well as exactly 1 and needs fewer steps).
NEWTON_SCHULZ = (3.4445, -4.7750, 2.0315)


def orthogonalize(matrices: Tensor, steps: int = 5, eps: float = 1e-7) -> Tensor:
    """Approximately ``U V^T`` for each matrix ``U S V^T`` of ``matrices`` (..., rows, cols).

    Dividing by the Frobenius norm puts every singular value in (0, 1]; each Newton-Schulz
    step ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` maps a singular value s to
    ``a s + b s^3 + c s^5`` and keeps the singular vectors.
    """
    a, b, c = NEWTON_SCHULZ
    tall = matrices.size(-2) > matrices.size(-1)
    x = matrices.mT if tall else matrices  # (..., r, k) with r <= k: A is the smaller Gram matrix
    x = x / (torch.linalg.matrix_norm(x, keepdim=True) + eps)
    for _ in range(steps):
        gram = x @ x.mT  # (..., r, r)
        x = a * x + (b * gram + c * gram @ gram) @ x
    return x.mT if tall else x


def update_scale(shape: torch.Size) -> float:
    """0.2 sqrt(max(rows, cols)): an orthogonal update's RMS matched to AdamW's (~0.2)."""
    return 0.2 * max(shape[-2], shape[-1]) ** 0.5


class Muon(torch.optim.Optimizer):
    """Muon for parameter groups marked ``"muon": True`` (matrices only), AdamW for the rest.

    ``momentum`` is Muon's mu; ``betas``, ``eps`` belong to the AdamW groups; ``lr`` and
    ``weight_decay`` (decoupled, per group) to both. ``fused`` picks PyTorch's fused AdamW
    kernel for the AdamW groups.
    """

    def __init__(
        self,
        params: Iterable[dict[str, Any]],
        lr: float,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_steps: int = 5,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps, betas=betas, eps=eps,
                        weight_decay=weight_decay, fused=fused, muon=False)
        super().__init__(params, defaults)
        for group in self.param_groups:
            if group["muon"]:
                flat = [tuple(p.shape) for p in group["params"] if p.dim() != 2]
                if flat:
                    raise ValueError(f"Muon updates matrices only; a muon group holds shapes {flat}")

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001 - torch's signature
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            if group["muon"]:
                self._muon_step(group)
            else:
                self._adamw_step(group)
        return loss

    def _muon_step(self, group: dict[str, Any]) -> None:
        mu, lr, decay = group["momentum"], group["lr"], group["weight_decay"]
        # matrices of one shape are orthogonalized together, as one batched product
        by_shape: dict[torch.Size, list[tuple[Tensor, Tensor]]] = {}
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            buffer = state["momentum_buffer"]
            buffer.mul_(mu).add_(p.grad)  # B_t = mu B_{t-1} + G_t
            direction = p.grad.add(buffer, alpha=mu) if group["nesterov"] else buffer
            by_shape.setdefault(p.shape, []).append((p, direction))
        for shape, pairs in by_shape.items():
            updates = orthogonalize(torch.stack([d for _, d in pairs]), steps=group["ns_steps"])
            for (p, _), update in zip(pairs, updates):
                p.mul_(1 - lr * decay)
                p.add_(update.to(p.dtype), alpha=-lr * update_scale(shape))

    def _adamw_step(self, group: dict[str, Any]) -> None:
        params, grads, exp_avgs, exp_avg_sqs, steps = [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            state = self.state[p]
            if not state:  # the layout torch.optim.AdamW keeps, so its kernels apply unchanged
                state["step"] = torch.zeros((), dtype=torch.float32, device=p.device if group["fused"] else None)
                state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            params.append(p)
            grads.append(p.grad)
            exp_avgs.append(state["exp_avg"])
            exp_avg_sqs.append(state["exp_avg_sq"])
            steps.append(state["step"])
        if not params:
            return
        beta1, beta2 = group["betas"]
        adamw(  # PyTorch's own AdamW update (its fused kernel where asked)
            params, grads, exp_avgs, exp_avg_sqs, [], steps, fused=group["fused"], amsgrad=False, beta1=beta1,
            beta2=beta2, lr=group["lr"], weight_decay=group["weight_decay"], eps=group["eps"], maximize=False,
        )

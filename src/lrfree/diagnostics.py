"""Read-outs for logging and for the plots of the step-size papers.

* ``rule_state(opt)``: every ``"<rule>.<field>"`` statistic per block, by readable name
  (for the LW rule: ``alpha`` the moving average used as the rate, ``raw`` the last per-update
  value ``rho / (L (rho + delta) delta)``, ``rho``, ``delta2``, ``dsq = ||d||^2``, ``count`` of
  accepted and ``skipped`` estimates): the paper's Fig. 2d / 3d traces.
* ``lw_cosine(opt)``: the cosine between the layer-wise step and the plain direction
  (Algorithm 4 of the LW paper), from the last estimate.
* ``block_hessian_slq(...)``: the spectral density of one Hessian diagonal block by stochastic
  Lanczos quadrature (Fig. 1 of the LW paper).

All of these read device values (host syncs): call them for logging, not in the hot loop.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["block_hessian_slq", "lw_cosine", "rule_state"]


def rule_state(opt: torch.optim.Optimizer) -> dict[str, dict[str, float]]:
    """Per block name, the rule's state fields as floats (block-valued fields: the mean).

    Works with any ``lrfree.Composed``; e.g. ``rule_state(opt)["0"]["raw"]``.
    """
    out: dict[str, dict[str, float]] = {}
    for gi, group in enumerate(opt.param_groups):
        rule = group["rule"]
        for s in opt.partition(gi).sets:  # type: ignore[attr-defined]
            st = opt.state.get(group["params"][s.owner], {})
            fields: dict[str, float] = {}
            for k, v in st.items():
                if isinstance(k, str) and k.startswith(rule + "."):
                    if isinstance(v, Tensor):
                        fields[k.split(".", 1)[1]] = float(v.double().mean())
                    elif isinstance(v, (int, float)):
                        fields[k.split(".", 1)[1]] = float(v)
            name = s.name if s.name not in out else f"{s.name}@group{gi}"
            out[name] = fields
    return out


def lw_cosine(opt: torch.optim.Optimizer, raw: bool = False) -> float:
    """cos(LW step, plain direction) = sum t_l ||d_l||^2 / (sqrt(sum t_l^2 ||d_l||^2)
    sqrt(sum ||d_l||^2)) over the blocks of the last estimate (Algorithm 4).

    ``t_l``: the moving-average rate (default) or the raw per-update value (``raw=True``).
    """
    num = sq = dd = 0.0
    for fields in rule_state(opt).values():
        if "dsq" not in fields:
            continue
        t = fields["raw" if raw else "alpha"]
        if not math.isfinite(t):
            continue
        dsq = fields["dsq"]
        num += t * dsq
        sq += t * t * dsq
        dd += dsq
    return num / math.sqrt(sq * dd) if sq > 0 and dd > 0 else float("nan")


def block_hessian_slq(
    loss_fn: Callable[[], Tensor],
    params: Sequence[Tensor],
    *,
    num_probes: int = 4,
    num_steps: int = 30,
    seed: int = 0,
) -> tuple[Tensor, Tensor]:
    """Eigenvalue nodes and weights of the Hessian block of ``params`` by stochastic Lanczos
    quadrature (Ghorbani et al. 2019): ``num_probes`` Rademacher probes, ``num_steps`` Lanczos
    steps each (full reorthogonalisation). Returns ``(nodes, weights)``, each of shape
    ``(num_probes * num_steps,)``; the weights of one probe sum to ``1 / num_probes``, so a
    density is ``sum_k weights_k N(x; nodes_k, sigma^2)``.

    ``loss_fn`` evaluates the loss (the other parameters are held fixed: the block Hessian).
    """
    params = list(params)
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)

    def hvp(v: list[Tensor]) -> list[Tensor]:
        with torch.enable_grad():
            hv = torch.autograd.grad(grads, params, v, retain_graph=True)
        return [h.detach() for h in hv]

    def flat(vs: Sequence[Tensor]) -> Tensor:
        return torch.cat([v.reshape(-1) for v in vs]).double()

    def unflat(x: Tensor) -> list[Tensor]:
        out, o = [], 0
        for p in params:
            out.append(x[o : o + p.numel()].reshape(p.shape).to(p.dtype))
            o += p.numel()
        return out

    n = sum(p.numel() for p in params)
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    m = min(num_steps, n)
    for _ in range(num_probes):
        v = (torch.randint(0, 2, (n,), generator=gen).double() * 2 - 1).to(params[0].device)
        v = v / v.norm()
        basis = [v]
        alphas, betas = [], []
        w = flat(hvp(unflat(v)))
        for j in range(m):
            a = torch.dot(w, basis[j])
            alphas.append(a)
            w = w - a * basis[j] - (betas[-1] * basis[j - 1] if j > 0 else 0)
            for b in basis:  # full reorthogonalisation
                w = w - torch.dot(w, b) * b
            beta = w.norm()
            if j == m - 1 or beta < 1e-10:
                break
            betas.append(beta)
            basis.append(w / beta)
            w = flat(hvp(unflat(basis[-1])))
        k = len(alphas)
        T = torch.diag(torch.stack(alphas))
        if k > 1:
            off = torch.stack(betas[: k - 1])
            T = T + torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(T)
        nodes.append(evals)
        weights.append(evecs[0] ** 2 / num_probes)
    return torch.cat(nodes), torch.cat(weights)

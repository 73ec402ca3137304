"""Square attack, Linf (Andriushchenko et al., ECCV 2020): score-based random search, no gradients.

Written from the paper. The input is viewed as ``[B, C, H, W]`` (``[B, D]`` as ``[B, 1, 1, D]``,
``[B, C, L]`` as ``[B, C, 1, L]``).

1. Query the clean input; samples already misclassified are done.
2. Start from vertical stripes: ``x + eps * s`` with ``s in {-1, +1}`` drawn per sample, channel and column.
3. Each iteration, per sample still correctly classified: pick a window of side ``s_h x s_w`` at a uniform
   position, set the perturbation inside it to ``+eps`` or ``-eps`` per channel (redrawn while that leaves the
   input unchanged), query, and keep the change if the margin ``z_y - max_{j!=y} z_j`` did not increase.
   The paper keeps strict decreases only (``accept_ties=False``); accepting ties lets the search move along
   the plateaus of quantised scores (spike counts of an SNN or a chip), where strict decreases are rare and
   strict acceptance leaves Square stuck (``tests/test_attack_targets.py`` measures the gap). On continuous
   scores the two rules coincide.
   The window covers a fraction ``p`` of the pixels (square side ``round(sqrt(p H W))``; for 1-D inputs a
   segment of ``round(p W)``); ``p`` starts at ``p_init`` and halves after iterations 10, 50, 200, 500, 1000,
   2000, 4000, 6000 and 8000 of a 10 000-query run (rescaled to the budget).

Every model evaluation of a sample counts as one query (the clean query included); ``queries`` holds the
count per sample of the last call, never above ``n_queries``.
"""
from __future__ import annotations

import math

import torch

from snnkit.attack.base import Attack, ScoreFn, Seed, margin, misclassified, query

_HALVINGS = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)


def square_fraction(p_init: float, it: int, n_queries: int) -> float:
    """The window's pixel fraction ``p`` at iteration ``it`` of a run with ``n_queries`` queries."""
    scaled = int(it / n_queries * 10000)
    return p_init / 2 ** sum(scaled > t for t in _HALVINGS)


def window_size(p: float, h: int, w: int) -> tuple[int, int]:
    """Window ``(s_h, s_w)`` covering about a fraction ``p`` of an ``h x w`` input (at least one pixel, and
    smaller than the input along every axis longer than one)."""
    if h == 1:
        return 1, min(max(round(p * w), 1), max(w - 1, 1))
    s = max(round(math.sqrt(p * h * w)), 1)
    return min(s, max(h - 1, 1)), min(s, max(w - 1, 1))


def _as_image(x: torch.Tensor) -> torch.Tensor:
    if x.ndim == 2:
        return x[:, None, None, :]
    if x.ndim == 3:
        return x[:, :, None, :]
    if x.ndim == 4:
        return x
    raise ValueError(f"Square: inputs must be [B, D], [B, C, L] or [B, C, H, W], got shape {tuple(x.shape)}")


class Square(Attack):
    """Square attack (Linf, untargeted, margin loss) against any score function ``scores(x) -> [B, C]``.

    n_queries: query budget per sample (the clean query included); p_init: initial window fraction;
    accept_ties: keep candidates with an equal margin (see the module docstring).
    After a call, ``queries`` ``[B]`` holds the queries each sample used.
    """

    kind = "black-box"
    family = "square"
    norms = ("Linf",)

    def __init__(self, model: ScoreFn, eps: float = 8 / 255, *, n_queries: int = 5000, p_init: float = 0.05,
                 accept_ties: bool = True, seed: Seed = 0):
        super().__init__(model, eps, norm="Linf", seed=seed)
        if n_queries < 2:
            raise ValueError(f"Square: n_queries must be >= 2 (clean query and initialisation), not {n_queries}")
        if not 0 < p_init <= 1:
            raise ValueError(f"Square: p_init must be in (0, 1], not {p_init}")
        self.n_queries = int(n_queries)
        self.p_init = float(p_init)
        self.accept_ties = accept_ties
        self.queries: torch.Tensor | None = None

    @property
    def name(self) -> str:
        return f"Square-{self.n_queries}"

    def _scores(self, x_img: torch.Tensor, shape: torch.Size) -> torch.Tensor:
        return query(self.model, x_img.reshape(shape))

    def perturb(self, x, y, generator):
        shape = x.shape
        xi = _as_image(x)
        b, c, h, w = xi.shape
        queries = torch.ones(b, dtype=torch.long, device=x.device)
        scores = self._scores(xi, shape)
        fooled = misclassified(scores, y)
        best = xi.clone()
        m_best = margin(scores, y)

        todo = (~fooled).nonzero().squeeze(1)
        if todo.numel():
            signs = torch.randint(0, 2, (todo.numel(), c, 1, w), generator=generator).to(x.device) * 2 - 1
            cand = (xi[todo] + self.eps * signs.to(x.dtype)).clamp(0, 1)
            s = self._scores(cand, (todo.numel(), *shape[1:]))
            queries[todo] += 1
            best[todo], m_best[todo], fooled[todo] = cand, margin(s, y[todo]), misclassified(s, y[todo])

        rows = torch.arange(h, device=x.device).view(1, 1, h, 1)
        cols = torch.arange(w, device=x.device).view(1, 1, 1, w)
        for it in range(self.n_queries - 2):
            todo = (~fooled & (queries < self.n_queries)).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            n = todo.numel()
            sh, sw = window_size(square_fraction(self.p_init, it, self.n_queries), h, w)
            top = torch.randint(0, h - sh + 1, (n,), generator=generator).to(x.device).view(n, 1, 1, 1)
            left = torch.randint(0, w - sw + 1, (n,), generator=generator).to(x.device).view(n, 1, 1, 1)
            inside = (rows >= top) & (rows < top + sh) & (cols >= left) & (cols < left + sw)
            x0, cur = xi[todo], best[todo]
            cand = cur
            pending = torch.ones(n, dtype=torch.bool, device=x.device)
            for _ in range(100):  # redraw the window's signs while they leave the input unchanged
                signs = (torch.randint(0, 2, (n, c, 1, 1), generator=generator).to(x.device) * 2 - 1).to(x.dtype)
                trial = torch.where(inside, (x0 + self.eps * signs).clamp(0, 1), cur)
                cand = torch.where(pending.view(n, 1, 1, 1), trial, cand)
                pending = (cand - cur).flatten(1).abs().sum(1) < 1e-7
                if not pending.any():
                    break
            s = self._scores(cand, (n, *shape[1:]))
            queries[todo] += 1
            m_new = margin(s, y[todo])
            better = (m_new <= m_best[todo]) if self.accept_ties else (m_new < m_best[todo])
            keep = todo[better]
            best[keep], m_best[keep] = cand[better], m_new[better]
            fooled[keep] = misclassified(s, y[todo])[better]
        self.queries = queries.cpu()
        return best.reshape(shape)

"""Robustness regularisers for spiking networks: MPD-SGR and TMI (``snn-train --reg SPEC``).

Both read the recordings of the clean batch (``model.run(x)``: per spiking layer ``[B, T, ...]`` spikes and
pre-reset membrane potentials, with their autograd graph) and return a scalar that is added to the loss.

MPD-SGR (membrane-potential-distribution surrogate-gradient regularisation, seed 003)
    For every spiking layer except the output layer, every channel ``c`` and time step ``t``, the membrane
    potential relative to threshold ``U = h - v_threshold`` is modelled as a Gaussian with the batch statistics
    ``mu_{l,c,t}``, ``sigma_{l,c,t}`` (over the batch and, for conv layers, the spatial positions; population
    variance). The overlap of that Gaussian with the surrogate's effective region ``[-gamma, gamma]`` is::

        Omega = Phi((gamma - mu) / sigma) - Phi((-gamma - mu) / sigma)

    (``= Phi((mu + gamma)/sigma) - Phi((mu - gamma)/sigma)``), the expected fraction of neurons that receive a
    surrogate gradient. The term is ``eta * mean_l mean_{c,t} Omega``: each layer's mean over channels and
    steps, then the mean over layers (so wide layers do not dominate). ``gamma`` defaults to each layer's
    surrogate ``support`` (the half-width where its derivative is at least a tenth of its peak; exact for the
    triangle and rectangle). Spec: ``mpd-sgr[:eta=0.5,gamma=G]``.

TMI (temporal mutual information, seed 004)
    Two per-step rate sequences per sample: ``X`` from the first spiking layer's spikes, ``Z`` from the last
    spiking layer's (by default the output layer, the last spiking layer of an snnkit model; ``last=-2``
    takes the one before it, the paper's choice for networks whose classifier is not spiking), each averaged
    over every neuron of the layer and multiplied by 255: ``[B, T]`` values in [0, 255]. Gaussian kernel
    density estimates on ``bins`` (256) equally spaced points of [0, 255]: ``K[b, t, j] = exp(-(x_bt - j)^2 /
    (2 w^2))``; marginal ``p(j) = mean_t K / sum``, joint ``p(i, j) = (K_X^T K_Z) / sum``; MI = H(X) + H(Z) -
    H(X, Z) in bits, the mean over the batch; the term is ``lambda * MI``.

    Kernel width: the released code (MengtingXu1203/SNN_TMI_code) writes ``sigma = 0.4`` but divides by
    ``2 sigma^2 = 0.32`` inside ``exp(-0.5 (r / .)^2)``, so its kernels have a standard deviation of 0.32 rate
    units (out of 255); the paper's text says 0.4. snnkit's default ``width=0.32`` reproduces the code; pass
    ``width=0.4`` for the paper's reading. Either way the kernels are much narrower than the spacing between
    distinct rates of a small layer (1/N of 255 for N neurons), so the estimate counts distinct rate values
    and its gradient is small except where two steps' rates nearly coincide; a wider kernel (``width=4``)
    smooths it. The MI is 0 when either sequence is constant in time. Spec: ``tmi[:lambda=0.05,width=0.32]``.
"""
from __future__ import annotations

import math

import torch

from snnkit import distributed
from snnkit.train.objectives import Regularizer, register_regularizer

_LOG2_EPS = 1e-10  # inside log2 (as the reference code) and in the KDE normalisation


def _normal_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * (1.0 + torch.erf(z / math.sqrt(2.0)))


def mpd_overlap(u: torch.Tensor, gamma: float, eps: float = 1e-6) -> torch.Tensor:
    """Per-channel, per-step Gaussian overlap with ``[-gamma, gamma]``.

    u: membrane potential relative to threshold, ``[B, T, C, ...]`` (``[B, T, F]`` for dense layers, where
    every neuron is a channel). Statistics are taken over the batch and every axis after ``C``.
    Returns ``Omega`` of shape ``[T, C]``. ``eps`` is added to the variance (a channel with constant
    potential has a step-shaped overlap and no gradient).
    """
    if u.dim() < 3:
        raise ValueError(f"mpd-sgr: membrane potentials must be [B, T, C, ...], got shape {tuple(u.shape)}")
    dims = (0, *range(3, u.dim()))
    if distributed.active():  # the statistics of the global batch, over every rank (snn-train --distributed)
        mu = distributed.global_mean(u, dims)
        var = distributed.global_mean((u - mu.view(1, *mu.shape, *[1] * (u.dim() - 3))).square(), dims)
    else:
        mu, var = u.mean(dim=dims), u.var(dim=dims, unbiased=False)
    sigma = (var + eps).sqrt()
    return _normal_cdf((gamma - mu) / sigma) - _normal_cdf((-gamma - mu) / sigma)


@register_regularizer("mpd-sgr")
class MPDSGR(Regularizer):
    """``eta * mean_l mean_{c,t} Omega_{l,c,t}`` over every spiking layer but the output (see module doc).

    eta: weight of the term (dimensionless); gamma: half-width of the surrogate's effective region in
    membrane units (default: each layer's ``surrogate.support``).
    """

    def __init__(self, eta: float = 0.5, gamma: float | None = None):
        if eta < 0:
            raise ValueError(f"mpd-sgr: eta must be >= 0, not {eta}")
        if gamma is not None and not gamma > 0:
            raise ValueError(f"mpd-sgr: gamma must be > 0, not {gamma}")
        self.eta = float(eta)
        self.gamma = None if gamma is None else float(gamma)

    def overlaps(self, model, run) -> dict[str, torch.Tensor]:
        """``{layer name: Omega [T, C]}`` for every spiking layer except the output layer."""
        layers = model.spiking_layers()
        names = list(layers)[:-1]
        if not names:
            raise ValueError("mpd-sgr: the model has no spiking layer before its output layer")
        out = {}
        for name in names:
            layer = layers[name]
            gamma = self.gamma if self.gamma is not None else float(layer.surrogate.support)
            if not math.isfinite(gamma):
                raise ValueError(f"mpd-sgr: layer {name}'s surrogate {layer.surrogate.spec} has unbounded support; "
                                 "give gamma explicitly (mpd-sgr:gamma=G)")
            out[name] = mpd_overlap(run.membranes[name] - layer.threshold, gamma)
        return out

    def __call__(self, model, run, x, y):
        per_layer = [omega.mean() for omega in self.overlaps(model, run).values()]
        return self.eta * torch.stack(per_layer).mean()


def rate_sequence(spikes: torch.Tensor) -> torch.Tensor:
    """``[B, T, ...]`` spikes -> ``[B, T]`` per-step firing rate of the whole layer, times 255."""
    return spikes.flatten(2).mean(2) * 255.0


def _kernels(seq: torch.Tensor, bins: torch.Tensor, width: float) -> torch.Tensor:
    """``[B, T]`` values -> ``[B, T, n_bins]`` Gaussian kernel values at every bin."""
    return torch.exp(-0.5 * ((seq.unsqueeze(-1) - bins) / width) ** 2)


def _entropy_bits(p: torch.Tensor, dims) -> torch.Tensor:
    return -(p * torch.log2(p + _LOG2_EPS)).sum(dim=dims)


def temporal_mutual_information(x_seq: torch.Tensor, z_seq: torch.Tensor, width: float = 0.32,
                                bins: int = 256, low: float = 0.0, high: float = 255.0) -> torch.Tensor:
    """KDE estimate of I(X; Z) in bits per sample, ``[B]``, from two ``[B, T]`` sequences (see module doc)."""
    if x_seq.shape != z_seq.shape or x_seq.dim() != 2:
        raise ValueError(f"tmi: sequences must both be [B, T], got {tuple(x_seq.shape)} and {tuple(z_seq.shape)}")
    grid = torch.linspace(low, high, bins, dtype=x_seq.dtype, device=x_seq.device)
    kx, kz = _kernels(x_seq, grid, width), _kernels(z_seq, grid, width)
    px = kx.mean(1)
    px = px / (px.sum(1, keepdim=True) + _LOG2_EPS)
    pz = kz.mean(1)
    pz = pz / (pz.sum(1, keepdim=True) + _LOG2_EPS)
    joint = kx.transpose(1, 2) @ kz
    joint = joint / (joint.sum(dim=(1, 2), keepdim=True) + _LOG2_EPS)
    return _entropy_bits(px, 1) + _entropy_bits(pz, 1) - _entropy_bits(joint, (1, 2))


@register_regularizer("tmi")
class TMI(Regularizer):
    """``lambda * mean_b I(X_b; Z_b)`` between two spiking layers' rate sequences (see module doc).

    Spec parameters: ``lambda`` (0.05), ``width`` (kernel standard deviation in rate units out of 255, 0.32),
    ``bins`` (256), ``first`` / ``last`` (indices into the model's spiking layers, 0 and -1).
    """

    def __init__(self, width: float = 0.32, bins: int = 256, first: int = 0, last: int = -1, **kw):
        unknown = set(kw) - {"lambda", "lam"}
        if unknown:
            raise ValueError(f"tmi: unknown parameter(s) {', '.join(sorted(unknown))} "
                             "(lambda, width, bins, first, last)")
        self.lam = float(kw.get("lambda", kw.get("lam", 0.05)))
        if self.lam < 0 or not width > 0 or int(bins) < 2:
            raise ValueError(f"tmi: need lambda >= 0, width > 0 and bins >= 2 (got {self.lam}, {width}, {bins})")
        self.width = float(width)
        self.bins = int(bins)
        self.first, self.last = int(first), int(last)

    def layers(self, model) -> tuple[str, str]:
        names = list(model.spiking_layers())
        try:
            first, last = names[self.first], names[self.last]
        except IndexError:
            raise ValueError(f"tmi: layer indices first={self.first}, last={self.last} out of range for "
                             f"{len(names)} spiking layers") from None
        if first == last:
            raise ValueError(f"tmi: first and last name the same spiking layer {first!r}")
        return first, last

    def __call__(self, model, run, x, y):
        first, last = self.layers(model)
        mi = temporal_mutual_information(rate_sequence(run.spikes[first]), rate_sequence(run.spikes[last]),
                                         self.width, self.bins)
        return self.lam * mi.mean()

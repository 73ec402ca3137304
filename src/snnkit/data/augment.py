"""Training augmentation of the image data sets: random crop with zero padding, then a horizontal flip.

The standard recipe of the CIFAR literature: pad each side by ``padding`` zeros, crop a random ``H x W``
window, flip left-right with probability 1/2, drawn per sample. Recipes by data set (:data:`RECIPES`):

- ``cifar10``, ``cifar100``: crop 32 with padding 4, flip.
- ``tiny-imagenet``: crop 64 with padding 4, flip (the CIFAR recipe applied to 64x64 images, a common choice
  for Tiny-ImageNet; papers also use padding 8 or random resized crops).

Only the training batches are augmented; evaluation and the test split never are. The draws come from the
augmentation's own generator, seeded from the training seed, and its state goes into the checkpoint, so a run
is deterministic and a resumed run exact.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from snnkit import distributed
from snnkit.data.errors import DataError
from snnkit.data.registry import info


@dataclass(frozen=True)
class Recipe:
    """Random crop of the input's own size after zero padding by ``padding`` pixels; a left-right flip with
    probability 1/2 when ``flip``."""

    padding: int
    flip: bool = True


RECIPES = {"cifar10": Recipe(4), "cifar100": Recipe(4), "tiny-imagenet": Recipe(4)}
"""The data sets with a standard training augmentation (on by default for them, off for the others)."""

_SEED_SALT = 0x5EED_A06
"""Mixed into the training seed so the augmentation draws differ from the shuffling generator's."""


def crop_flip(x: torch.Tensor, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """``x [B, C, H, W]`` randomly cropped (after zero padding) and flipped per sample; same shape and dtype.

    Offsets are drawn uniformly from ``0 .. 2 * padding`` per axis, then the flips; all from ``generator``
    (on the CPU), so the result depends only on its state.
    """
    b, _, h, w = x.shape
    # drawn for the whole global batch and sliced when x is one rank's share of it (snnkit.distributed.draw)
    offsets = distributed.draw(lambda shape, **kw: torch.randint(0, 2 * padding + 1, shape, **kw), (b, 2),
                               generator=generator).T
    flips = (distributed.draw(torch.rand, (b,), generator=generator) < 0.5 if flip
             else torch.zeros(b, dtype=torch.bool))
    device = x.device
    padded = torch.nn.functional.pad(x, (padding, padding, padding, padding))
    rows = offsets[0, :, None] + torch.arange(h)  # [B, H]
    cols = torch.arange(w).expand(b, w)
    cols = torch.where(flips[:, None], w - 1 - cols, cols) + offsets[1, :, None]  # [B, W]
    batch = torch.arange(b)[:, None, None]
    # advanced indexing puts the indexed axes first: [B, H, W, C] -> [B, C, H, W]
    out = padded.permute(0, 2, 3, 1)[batch.to(device), rows[:, :, None].to(device), cols[:, None, :].to(device)]
    return out.permute(0, 3, 1, 2).contiguous()


class Augmentation:
    """The training augmentation of one run: ``aug(xb) -> xb`` (identity when off), with a state to checkpoint.

    Use :meth:`for_training`. ``recipe`` None means off.
    """

    def __init__(self, recipe: Recipe | None, seed: int = 0):
        self.recipe = recipe
        self.generator = torch.Generator().manual_seed((int(seed) * 1_000_003 + _SEED_SALT) % 2**63)

    @classmethod
    def for_training(cls, dataset: str, enabled: bool | None, seed: int) -> "Augmentation":
        """The augmentation of a training run on ``dataset``: ``enabled`` None takes the data set's default
        (on where :data:`RECIPES` has a recipe); True for a set without one is a DataError."""
        if enabled and dataset not in RECIPES:
            info(dataset)  # an unknown name says so first
            raise DataError(f"data: {dataset} has no standard augmentation (sets with one: {', '.join(RECIPES)}); "
                            "drop --augment")
        return cls(RECIPES.get(dataset) if enabled is not False else None, seed)

    @property
    def enabled(self) -> bool:
        return self.recipe is not None

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """A training batch ``[B, C, H, W]`` augmented (``x`` itself when off)."""
        if self.recipe is None:
            return x
        return crop_flip(x, self.recipe.padding, self.recipe.flip, self.generator)

    def get_state(self) -> torch.Tensor:
        return self.generator.get_state()

    def set_state(self, state: torch.Tensor) -> None:
        self.generator.set_state(state)

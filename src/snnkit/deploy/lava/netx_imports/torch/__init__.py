"""Stand-in for the two torch names lava-dl 0.6's netx touches (Lava worker only; not torch).

``lava.lib.dl.netx.sequential_modules`` names ``torch.tensor`` in type hints and calls ``torch.is_tensor`` in
helpers that ``netx.hdf5.Network`` never uses. See ``../README.md`` for why this exists and where it is used.
"""

SNNKIT_STAND_IN = True


class tensor:  # noqa: N801 - the name netx's type hints use
    """A type for netx's hints; no tensor can be made in the Lava environment."""

    def __new__(cls, *args, **kwargs):
        raise RuntimeError("torch is not installed in the Lava environment (snnkit's netx import stand-in)")


def is_tensor(obj) -> bool:
    """Always False: no torch tensor can exist where torch is not installed."""
    return False

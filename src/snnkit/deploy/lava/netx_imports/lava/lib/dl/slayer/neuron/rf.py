"""Stand-in for ``lava.lib.dl.slayer.neuron.rf``: netx imports ``neuron_params`` and calls it only for
resonate-and-fire layers, which snnkit never writes (see ``netx_imports/README.md``)."""


def neuron_params(device_params, scale=1 << 6, p_scale=1 << 12):
    """Refuse: resonate-and-fire layers need lava-dl's slayer (and torch) in the Lava environment."""
    raise RuntimeError("netx: resonate-and-fire layers need lava-dl's slayer (torch) in the Lava environment; "
                       "snnkit's import stand-in only covers CUBA networks")

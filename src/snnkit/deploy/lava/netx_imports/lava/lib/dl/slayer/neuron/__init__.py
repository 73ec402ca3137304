"""Stand-in for ``lava.lib.dl.slayer.neuron``: only ``rf.neuron_params``, which netx imports."""

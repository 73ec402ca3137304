"""The Lava target: :mod:`target` (host side, ``LavaTarget``) runs :mod:`worker` in the Python 3.10 Lava
environment, which builds the network with :mod:`build`. Importing this package imports nothing else."""

"""Lava processes of snnkit's own (imported only inside the Lava worker).

Lava's compiler imports every module in this directory when it looks for process models, so nothing else
lives here.
"""

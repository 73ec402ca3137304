"""Stand-in for lava-dl's slayer package, holding only what netx imports (see ``netx_imports/README.md``)."""

"""One module per fusion pattern; each registers its Fusion class with `trtpipe.fusions.registry.register`."""

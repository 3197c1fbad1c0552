"""Model factories: torch models built from configs with random, seeded weights (nothing is downloaded).

A recipe names a factory as `model: {factory: "package.module:callable", kwargs: {...}}`. The convention the
`export` stage relies on:

- `callable(**kwargs)` returns a `torch.nn.Module` in eval mode; `seed` (where accepted) makes the weights
  reproducible.
- `forward` takes the recipe's inputs as parameters of the same names and returns a tensor or a tuple of tensors.
- The module's `output_names` attribute (a tuple of str, one per output) names the outputs in the ONNX graph and
  in the reference file; without it they are `output_0`, `output_1`, ...

This package imports nothing heavy: torch and transformers are imported by the factory modules themselves.
"""

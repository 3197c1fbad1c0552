"""ONNX-level mixed precision: which nodes must stay FP32, and a graph that runs everything else in fp16/bf16.

- `ops`: what the converter knows about ONNX ops (data movement, heavy compute, type constraints).
- `convert`: FP32 graph + FP32 node set -> mixed graph with Casts only where precision regions meet.
- `capture`: intermediate tensors through ONNX Runtime, a chunk of tensors at a time.
- `rules`: rules that choose the FP32 set (block lists, fragile ops, ranges, reduction depth).
- `sensitivity`: which nodes add the most error when run in low precision.
- `search`: the smallest FP32 set that meets an accuracy budget on a backend, resumable.
"""

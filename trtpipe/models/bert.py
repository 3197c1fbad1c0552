"""A small BERT encoder (transformers) with random seeded weights, exported with LayerNorm, Softmax and GELU inside.

Eager attention keeps Softmax an explicit ONNX node: the mixed-precision work needs to see it.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertModel

SIZES = {
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=512),
    "small": dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4, intermediate_size=1024),
    "base": dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072),
}


class Bert(BertModel):
    """`input_ids` [N, S] int64, `attention_mask` [N, S] int64 (1 = attend) -> `hidden_states` [N, S, hidden]."""

    output_names = ("hidden_states",)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return super().forward(input_ids=input_ids, attention_mask=attention_mask, return_dict=True).last_hidden_state


def config(size: str = "tiny", vocab_size: int = 1000, max_positions: int = 512) -> BertConfig:
    if size not in SIZES:
        raise ValueError(f"unknown BERT size '{size}'; sizes: {', '.join(SIZES)}")
    return BertConfig(
        vocab_size=vocab_size,
        max_position_embeddings=max_positions,
        hidden_act="gelu",
        attn_implementation="eager",
        **SIZES[size],
    )


def build(size: str = "tiny", seed: int = 0, vocab_size: int = 1000, max_positions: int = 512) -> Bert:
    """Sizes: tiny (128 hidden, 2 layers), small (256, 4), base (768, 12). Token ids must be < vocab_size."""
    cfg = config(size, vocab_size, max_positions)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = Bert(cfg, add_pooling_layer=False)
    return model.eval()

"""DAB-DETR (transformers) with a ResNet backbone built from configs, random seeded weights, no downloads."""

from __future__ import annotations

import torch
from transformers import DabDetrConfig, DabDetrForObjectDetection, ResNetConfig

SIZES = {
    "tiny": dict(
        backbone=dict(depths=[1, 1, 1, 1], layer_type="basic", hidden_sizes=[64, 128, 256, 512]),
        hidden_size=128, encoder_layers=2, decoder_layers=2, encoder_ffn_dim=512, decoder_ffn_dim=512,
        num_queries=100,
    ),
    "r50": dict(
        backbone=dict(depths=[3, 4, 6, 3], layer_type="bottleneck", hidden_sizes=[256, 512, 1024, 2048]),
        hidden_size=256, encoder_layers=6, decoder_layers=6, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
        num_queries=300,
    ),
}

INPUT_SHAPES = {"tiny": (1, 3, 320, 320), "r50": (1, 3, 800, 800)}


class DabDetr(DabDetrForObjectDetection):
    """`pixel_values` [N, 3, H, W] -> (`logits` [N, queries, labels], `boxes` [N, queries, 4] as cx, cy, w, h).

    A subclass rather than a wrapper, so ONNX node names are the transformers module paths (/model/encoder/...).
    """

    output_names = ("logits", "boxes")

    def forward(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = super().forward(pixel_values=pixel_values, return_dict=True)
        return out.logits, out.pred_boxes


def config(size: str = "tiny", num_labels: int = 91) -> DabDetrConfig:
    if size not in SIZES:
        raise ValueError(f"unknown DAB-DETR size '{size}'; sizes: {', '.join(SIZES)}")
    spec = dict(SIZES[size])
    backbone = ResNetConfig(**spec.pop("backbone"), out_features=["stage4"])
    return DabDetrConfig(
        backbone_config=backbone,
        use_timm_backbone=False,
        use_pretrained_backbone=False,
        num_labels=num_labels,
        **spec,
    )


def build(size: str = "tiny", seed: int = 0, num_labels: int = 91) -> DabDetr:
    """Sizes: `tiny` (input 1x3x320x320) and `r50` (input 1x3x800x800), see INPUT_SHAPES."""
    cfg = config(size, num_labels)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        model = DabDetr(cfg)
    return model.eval()

"""Model factories: the configs asked for, seeded weights, and the forward convention the export stage relies on."""

import pytest

torch = pytest.importorskip("torch")

from trtpipe.models import bert, cnn, dab_detr


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_cnn_is_seeded_and_in_eval_mode():
    model = cnn.build(seed=1)
    assert not model.training
    assert same_weights(model, cnn.build(seed=1))
    assert not same_weights(model, cnn.build(seed=2))
    logits = model(torch.rand(2, 3, 24, 24))
    assert logits.shape == (2, 10) and model.output_names == ("logits",)


def test_cnn_batchnorm_is_not_identity():
    bn = cnn.build().features[0][1]
    assert not torch.allclose(bn.running_mean, torch.zeros_like(bn.running_mean))


def test_dab_detr_tiny_config_and_outputs():
    model = dab_detr.build("tiny")
    cfg = model.config
    assert cfg.backbone_config.model_type == "resnet"
    assert list(cfg.backbone_config.depths) == [1, 1, 1, 1] and cfg.backbone_config.layer_type == "basic"
    assert (cfg.hidden_size, cfg.encoder_layers, cfg.decoder_layers, cfg.num_queries) == (128, 2, 2, 100)
    assert not model.training
    with torch.no_grad():
        logits, boxes = model(torch.rand(dab_detr.INPUT_SHAPES["tiny"]))
    assert logits.shape == (1, 100, 91) and boxes.shape == (1, 100, 4)
    assert ((boxes >= 0) & (boxes <= 1)).all()
    assert model.output_names == ("logits", "boxes")


def test_dab_detr_weights_follow_the_seed():
    assert same_weights(dab_detr.build("tiny", seed=3), dab_detr.build("tiny", seed=3))
    assert not same_weights(dab_detr.build("tiny", seed=3), dab_detr.build("tiny", seed=4))


def test_dab_detr_r50_config():
    cfg = dab_detr.config("r50")
    backbone = cfg.backbone_config
    assert list(backbone.depths) == [3, 4, 6, 3] and backbone.layer_type == "bottleneck"
    assert list(backbone.hidden_sizes) == [256, 512, 1024, 2048]
    assert (cfg.hidden_size, cfg.encoder_layers, cfg.decoder_layers, cfg.num_queries, cfg.num_labels) == (
        256, 6, 6, 300, 91)
    assert dab_detr.INPUT_SHAPES["r50"] == (1, 3, 800, 800)


def test_unknown_size_names_the_choices():
    with pytest.raises(ValueError, match="sizes: tiny, r50"):
        dab_detr.build("huge")
    with pytest.raises(ValueError, match="sizes: tiny, small, base"):
        bert.build("huge")


def test_bert_attention_mask_hides_padding():
    model = bert.build("tiny", seed=0)
    ids = torch.randint(0, 1000, (1, 12))
    padded = torch.cat([ids, torch.randint(0, 1000, (1, 4))], dim=1)
    mask = torch.cat([torch.ones(1, 12), torch.zeros(1, 4)], dim=1).long()
    with torch.no_grad():
        short = model(ids, torch.ones(1, 12, dtype=torch.long))
        long = model(padded, mask)
    assert long.shape == (1, 16, 128)
    torch.testing.assert_close(long[:, :12], short, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("name, size", [("dab_detr_tiny", "tiny"), ("dab_detr", "r50")])
def test_dab_detr_recipes(name, size):
    from pathlib import Path

    from trtpipe import recipe

    r = recipe.load(Path(__file__).parent.parent / "recipes" / f"{name}.yaml")
    assert r.model.factory == "trtpipe.models.dab_detr:build" and r.model.kwargs["size"] == size
    assert r.inputs["pixel_values"].resolve("opt") == dab_detr.INPUT_SHAPES[size]
    assert list(r.stages)[:4] == ["export", "simplify", "fold-constants", "fuse-plugins"]
    assert all(r.stage(n).kind == n for n in list(r.stages)[:4]) and r.stage("export").opset == 16

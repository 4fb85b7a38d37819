"""U-Net and TransUNet: one code path for 2D and 3D, odd sizes, dropout sites, deep supervision."""

from __future__ import annotations

import pytest
import torch

from napari_medseg.models import TransUNet, UNet, dropout_modules

TINY = {
    UNet: {"features": (4, 8, 16)},
    TransUNet: {
        "features": (4, 8, 16),
        "embed_dim": 16,
        "depth": 1,
        "num_heads": 2,
        "train_grid": 4,
    },
}
SHAPES = {2: [(16, 16), (23, 17), (5, 31)], 3: [(8, 8, 8), (9, 13, 11)]}
CASES = [(cls, dims, shape) for cls in TINY for dims, shapes in SHAPES.items() for shape in shapes]


def make(cls, dims, in_channels=2, out_channels=3, **changes):
    torch.manual_seed(0)
    kwargs = {**TINY[cls], **changes}
    return cls(spatial_dims=dims, in_channels=in_channels, out_channels=out_channels, **kwargs)


def case_id(case):
    cls, dims, shape = case
    return f"{cls.__name__}-{dims}d-{'x'.join(map(str, shape))}"


@pytest.mark.parametrize("case", CASES, ids=case_id)
def test_output_has_input_spatial_shape_and_k_channels(case):
    cls, dims, shape = case
    model = make(cls, dims).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 2, *shape))
    assert out.shape == (2, 3, *shape)
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("case", [c for c in CASES if c[2] in ((23, 17), (9, 13, 11))], ids=case_id)
def test_gradients_reach_every_parameter_and_the_input(case):
    cls, dims, shape = case
    model = make(cls, dims).train()
    x = torch.randn(1, 2, *shape, requires_grad=True)
    model(x).logsumexp(dim=1).mean().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.parametrize("cls", list(TINY))
@pytest.mark.parametrize("dims", [2, 3])
def test_forward_equals_decode_of_encode(cls, dims):
    model = make(cls, dims).eval()
    x = torch.randn(1, 2, *SHAPES[dims][1])
    with torch.no_grad():
        features = model.encode(x)
        assert [f.shape[1] for f in features] == [4, 8, 16]
        assert torch.equal(model(x), model.decode(features))


@pytest.mark.parametrize("cls", list(TINY))
def test_dropout_modules_sit_at_named_sites_only(cls):
    model = make(cls, 2, dropout=0.5, dropout_sites=("decoder",))
    assert dropout_modules(model, ["decoder"])
    assert all(m.p == 0.5 for m in dropout_modules(model, ["decoder"]))
    assert not dropout_modules(model, ["encoder"])
    assert not dropout_modules(model, ["bottleneck"])
    everywhere = make(cls, 2, dropout=0.5, dropout_sites=("encoder", "bottleneck", "decoder"))
    for site in ("encoder", "bottleneck", "decoder"):
        assert dropout_modules(everywhere, [site]), site


@pytest.mark.parametrize("cls", list(TINY))
@pytest.mark.parametrize("dims", [2, 3])
def test_dropout_inactive_in_eval_active_in_train(cls, dims):
    sites = ("encoder", "bottleneck", "decoder")
    model = make(cls, dims, dropout=0.5, dropout_sites=sites)
    x = torch.randn(1, 2, *SHAPES[dims][0])
    with torch.no_grad():
        model.eval()
        assert torch.equal(model(x), model(x))
        model.train()
        assert not torch.equal(model(x), model(x))


@pytest.mark.parametrize("cls", list(TINY))
def test_zero_dropout_is_in_place_but_inactive(cls):
    model = make(cls, 2, dropout=0.0, norm="instance").train()
    modules = dropout_modules(model, ["decoder"])
    assert modules and all(m.p == 0.0 for m in modules)
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))


@pytest.mark.parametrize("cls", list(TINY))
def test_mc_dropout_samples_only_the_decoder(cls):
    model = make(cls, 2, dropout=0.3).eval()
    x = torch.randn(1, 2, 16, 16)
    with torch.no_grad():
        features = model.encode(x)
        for module in dropout_modules(model, ["decoder"]):
            module.train()
        a, b = model.decode(features), model.decode(features)
    assert not torch.equal(a, b)
    assert a.shape == (1, 3, 16, 16)


@pytest.mark.parametrize("cls", list(TINY))
@pytest.mark.parametrize("dims", [2, 3])
def test_deep_supervision_only_in_training(cls, dims):
    model = make(cls, dims, deep_supervision=True)
    shape = SHAPES[dims][1]
    x = torch.randn(1, 2, *shape)
    outputs = model.train()(x)
    assert isinstance(outputs, tuple) and len(outputs) == 2  # main + one deeper level
    assert all(o.shape == (1, 3, *shape) for o in outputs)
    with torch.no_grad():
        single = model.eval()(x)
    assert isinstance(single, torch.Tensor) and single.shape == (1, 3, *shape)


@pytest.mark.parametrize("norm", ["group", "instance", "batch"])
@pytest.mark.parametrize("residual", [False, True])
def test_unet_norms_and_residual_blocks(norm, residual):
    model = make(UNet, 3, norm=norm, residual=residual).train()
    out = model(torch.randn(2, 2, 7, 10, 9))
    assert out.shape == (2, 3, 7, 10, 9)


@pytest.mark.parametrize("dims, train_shape, other_shape", [
    (2, (16, 16), (23, 41)),
    (3, (16, 16, 16), (9, 21, 13)),
])  # fmt: skip
def test_transunet_interpolates_positional_embeddings(dims, train_shape, other_shape):
    model = make(TransUNet, dims).eval()
    grids = []
    hook = model.bottleneck.token_grid.register_forward_hook(
        lambda module, args, out: grids.append(tuple(out.shape))
    )
    with torch.no_grad():
        assert model(torch.randn(1, 2, *train_shape)).shape == (1, 3, *train_shape)
        assert model(torch.randn(1, 2, *other_shape)).shape == (1, 3, *other_shape)
    hook.remove()
    other_grid = tuple(-(-s // 4) for s in other_shape)  # ceil(S / 2**2): 2 downsamplings
    assert grids == [(1, 16, *(4,) * dims), (1, 16, *other_grid)]
    bottleneck = model.bottleneck
    assert bottleneck.positional_embedding((4,) * dims) is bottleneck.pos_embed
    assert bottleneck.positional_embedding(other_grid).shape == (1, 16, *other_grid)


def test_interpolated_positional_embedding_still_learns():
    model = make(TransUNet, 2).train()
    model(torch.randn(1, 2, 40, 24)).sum().backward()
    assert model.bottleneck.pos_embed.grad.abs().sum() > 0


def test_default_gradcam_layers_exist():
    for cls in TINY:
        model = make(cls, 2)
        assert cls.default_gradcam_layer in dict(model.named_modules())


@pytest.mark.parametrize("cls", list(TINY))
@pytest.mark.parametrize("changes, quoted", [
    ({"spatial_dims": 4}, "spatial_dims 4"),
    ({"in_channels": 0}, "in_channels 0"),
    ({"out_channels": "3"}, "out_channels '3'"),
    ({"features": (8,)}, "features (8,)"),
    ({"features": (8, -1)}, "features (8, -1)"),
    ({"norm": "layer"}, "norm 'layer'"),
    ({"dropout": 1.0}, "dropout 1.0"),
    ({"dropout_sites": ("middle",)}, "['middle']"),
    ({"dropout_sites": "decoder"}, "dropout_sites 'decoder'"),
])  # fmt: skip
def test_constructor_errors_quote_the_bad_value(cls, changes, quoted):
    kwargs = {"spatial_dims": 2, "in_channels": 1, "out_channels": 3, **TINY[cls], **changes}
    with pytest.raises(ValueError, match=None) as info:
        cls(**kwargs)
    assert quoted in str(info.value)


@pytest.mark.parametrize("changes, quoted", [
    ({"embed_dim": 10, "num_heads": 4}, "embed_dim 10"),
    ({"depth": 0}, "depth 0"),
    ({"train_grid": (4, 4, 4)}, "train_grid (4, 4, 4)"),
    ({"mlp_ratio": 0}, "mlp_ratio 0"),
])  # fmt: skip
def test_transunet_errors_quote_the_bad_value(changes, quoted):
    with pytest.raises(ValueError) as info:
        make(TransUNet, 2, **changes)
    assert quoted in str(info.value)


def test_constructor_is_keyword_only():
    with pytest.raises(TypeError):
        UNet(2, 1, 3)  # type: ignore[misc]


@pytest.mark.parametrize("cls", list(TINY))
def test_wrong_input_shape_is_named(cls):
    model = make(cls, 3)
    with pytest.raises(ValueError, match=r"input shape \(1, 2, 8, 8\)"):
        model(torch.randn(1, 2, 8, 8))

"""Every registered backbone honours the Encoder contract (timm style: one parametrized test)."""

import pytest
import torch

from tricl.config import RunConfig
from tricl.methods import build_encoder
from tricl.models import BACKBONES, S_PARAMETRIZATIONS, Encoder, importance_from_logits


def tri_encoder(backbone="small_cnn", in_channels=1, hidden=16, k=8, **settings) -> Encoder:
    """A triCL encoder (S's logits added by the method, as training builds it)."""
    cfg = RunConfig(
        method="tricl", backbone=backbone, proj_hidden_dim=hidden, proj_dim=k, **settings
    )
    return build_encoder(cfg, in_channels)


# input sizes each backbone is meant for; small enough to stay fast on 2 cores
SIZES = {"small_cnn": 28, "resnet18_cifar": 32, "resnet18": 64, "resnet50": 64}


@pytest.mark.parametrize("name", sorted(BACKBONES))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_every_backbone_gives_the_right_shapes(name, in_channels):
    size = SIZES.get(name, 32)
    enc = tri_encoder(name, in_channels, hidden=32, k=12).eval()
    x = torch.randn(2, in_channels, size, size)
    with torch.no_grad():
        h = enc.forward_features(x)
        z = enc.project(h)
    assert h.shape == (2, enc.feat_dim)
    assert z.shape == (2, 12)
    assert torch.equal(enc(x), z)
    assert enc.importance().shape == (12,)
    assert isinstance(enc.last_conv_layer(), torch.nn.Conv2d)


def test_projector_keys_match_the_official_layout():
    enc = tri_encoder(hidden=32)
    keys = {k for k in enc.state_dict() if k.startswith("projector.")}
    assert keys == {
        "projector.0.weight",
        "projector.0.bias",
        "projector.2.weight",
        "projector.2.bias",
    }


def test_importance_is_positive_softplus_and_absent_without_s():
    enc = tri_encoder()
    s = enc.importance()
    assert torch.allclose(s, torch.nn.functional.softplus(enc.importance_logits))
    assert (s > 0).all()
    assert Encoder("small_cnn", 1, 16, 8).importance() is None


def test_mean1_parametrisation_has_unit_mean():
    enc = tri_encoder(s_init_std=2.0, s_param="softplus_mean1")
    assert enc.importance().mean().item() == pytest.approx(1.0, abs=1e-6)


def test_resnet18_cifar_keeps_resolution_in_the_stem():
    enc = Encoder("resnet18_cifar", 3, 32, 8)
    conv1 = enc.backbone.conv1
    assert conv1.kernel_size == (3, 3) and conv1.stride == (1, 1)
    assert isinstance(enc.backbone.maxpool, torch.nn.Identity)


def test_geometric_s_init_spans_the_requested_decades():
    enc = tri_encoder(s_init="geometric", s_init_spread=2.0)
    s = enc.importance().detach()
    assert s[0].item() == pytest.approx(1.0, rel=1e-5)
    assert s[-1].item() == pytest.approx(0.01, rel=1e-4)
    assert (s[1:] < s[:-1]).all()


@pytest.mark.parametrize("s_param", sorted(S_PARAMETRIZATIONS))
def test_encoder_s_is_the_one_definition_from_logits(s_param):
    enc = tri_encoder(s_init_std=1.0, s_param=s_param)
    s = enc.importance()
    assert torch.equal(s, importance_from_logits(enc.importance_logits, s_param))
    assert (s > 0).all()


def test_importance_from_logits_closed_forms():
    logits = torch.tensor([0.0, 1.0, -2.0])
    softplus = torch.log1p(torch.exp(logits))
    torch.testing.assert_close(importance_from_logits(logits), softplus)
    torch.testing.assert_close(
        importance_from_logits(logits, "softplus_mean1"), softplus / softplus.mean()
    )


def test_unknown_s_param_is_refused_when_s_is_added():
    with pytest.raises(ValueError, match="unknown s_param 'exp'"):
        Encoder("small_cnn", 1, 16, 8).learn_importance(torch.zeros(8), "exp")


def test_s_parametrizations_match_config():
    from tricl.config import S_PARAMETRIZATIONS as CONFIG_S_PARAMS

    assert set(S_PARAMETRIZATIONS) == set(CONFIG_S_PARAMS)

"""CEFormer's deploy form: exact (1e-5) for every C-switch combination and
both prune modes, loadable as a state dict, refusing training; the
converter tool round trip."""
import itertools
import sys
from pathlib import Path

import pytest
import torch
from helpers import images, in_mode

from mmceformer.models import CEFormer

ROOT = Path(__file__).resolve().parents[2]
ARCH = dict(embed_dims=48, depth=2, num_heads=2, stem_channels=16)


def trained_looking(model):
    """Non-trivial BN statistics and biases, as a trained model has."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(generator=gen)
                module.running_var.uniform_(0.5, 2., generator=gen)
                module.weight.normal_(1, 0.2, generator=gen)
                module.bias.normal_(generator=gen)
            elif isinstance(module, torch.nn.Conv2d) and \
                    module.bias is not None:
                module.bias.normal_(0, 0.1, generator=gen)
    return model


def build(**kwargs):
    torch.manual_seed(0)
    return CEFormer(arch=ARCH, img_size=64, **kwargs)


@pytest.mark.parametrize('prune_mode', ['drop', 'skip'])
@pytest.mark.parametrize('switches',
                         list(itertools.product([True, False], repeat=4)))
def test_deploy_form_equals_training_form(switches, prune_mode):
    c1, c2, c3, c4 = switches
    options = dict(
        use_c1=c1,
        use_c2=c2,
        use_c3=c3,
        use_c4=c4,
        prune_mode=prune_mode,
        prune_layers=[1],
        out_type='featmap')
    model = in_mode(trained_looking(build(**options)), training=False)
    x = images(size=(64, 96))
    with torch.no_grad():
        before = model(x)[0]
        model.switch_to_deploy()
        after = model(x)[0]
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    # A deploy-form state dict loads into a model built in deploy form.
    deployed = in_mode(build(deploy=True, **options), training=False)
    deployed.load_state_dict(model.state_dict(), strict=True)
    with torch.no_grad():
        torch.testing.assert_close(deployed(x)[0], after)


def test_merged_kernel_is_one_7x7_conv_per_block():
    model = build()
    model.switch_to_deploy()
    for layer in model.layers:
        (conv, ) = layer.ffn.dw_convs
        assert conv.kernel_size == (7, 7) and conv.dilation == (1, 1)
    assert isinstance(model.patch_embed.bn, torch.nn.Identity)
    model.switch_to_deploy()  # idempotent


def test_training_a_deploy_form_raises():
    model = build()
    model.switch_to_deploy()
    with pytest.raises(RuntimeError, match='deploy'):
        model.train()
    with pytest.raises(RuntimeError, match='deploy'):
        build(deploy=True).train()
    build(deploy=True).eval()  # evaluation is fine


def test_reparameterize_tool(shrink_config, tmp_path):
    from mmengine.config import Config
    sys.path.insert(0, str(ROOT / 'tools' / 'model_converters'))
    import reparameterize_model
    from mmceformer.utils.complexity import build_model
    cfg = Config.fromfile(str(ROOT / 'configs' / 'cls_ceformer_s_in1k.py'))
    shrink_config(cfg)
    model, _ = build_model(cfg)
    trained_looking(model)
    ckpt = tmp_path / 'model.pth'
    torch.save({'state_dict': model.state_dict()}, ckpt)
    out = tmp_path / 'deploy.pth'
    reparameterize_model.convert(cfg, str(ckpt), str(out))
    cfg.model.backbone.deploy = True
    deployed, _ = build_model(cfg)
    from mmengine.runner import load_checkpoint
    load_checkpoint(deployed, str(out), strict=True)
    x = images(batch=1)
    with torch.no_grad():
        torch.testing.assert_close(
            deployed(x, mode='tensor'),
            model(x, mode='tensor'),
            rtol=1e-5,
            atol=1e-5)

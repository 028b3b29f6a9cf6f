"""The plain and Swin backbones inside mmdet's Mask R-CNN, every mode:
one train step and one predict on two images of different sizes."""
import pytest
import torch
from mmengine.hub import get_config
from mmengine.registry import init_default_scope

import mmceformer  # noqa: F401

pytestmark = pytest.mark.mmcv_ops  # Mask R-CNN needs RoIAlign, nms

BACKBONES = {
    'EAttentionViT':
    dict(
        type='EAttentionViT',
        arch=dict(
            embed_dims=48, num_layers=4, num_heads=3, feedforward_channels=96),
        img_size=64,
        prune_mode='skip',
        out_type='pyramid'),
    'EAttentionSwin':
    dict(
        type='EAttentionSwin',
        arch=dict(embed_dims=16, depths=[1, 1, 2, 1], num_heads=[1, 1, 2, 2]),
        window_size=4,
        pad_small_map=True,
        out_indices=(0, 1, 2, 3)),
}
NECK_CHANNELS = {
    'EAttentionViT': [12, 24, 48, 48],
    'EAttentionSwin': [16, 32, 64, 128]
}


@pytest.mark.parametrize('mode', ['softmax', 'linear', 'prune', 'eattn'])
@pytest.mark.parametrize('backbone', sorted(BACKBONES))
def test_mask_rcnn_train_step_and_predict(backbone, mode):
    from mmdet.registry import MODELS
    from mmdet.testing import demo_mm_inputs
    init_default_scope('mmdet')
    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py')
    cfg.model.backbone = dict(BACKBONES[backbone], attn_mode=mode)
    cfg.model.neck.in_channels = NECK_CHANNELS[backbone]
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    packed = demo_mm_inputs(
        2, [(3, 128, 160), (3, 120, 128)],
        num_items=[2, 1],
        num_classes=80,
        with_mask=True)
    model.train()
    data = model.data_preprocessor(packed, True)
    loss, _ = model.parse_losses(model(**data, mode='loss'))
    loss.backward()
    assert torch.isfinite(loss)
    model.eval()
    with torch.no_grad():
        data = model.data_preprocessor(packed, False)
        results = model(**data, mode='predict')
    assert [r.ori_shape for r in results] == [(128, 160), (120, 128)]


@pytest.mark.parametrize('backbone', ['EAttentionViT', 'CEFormer'])
def test_roi_features_are_those_of_contiguous_maps(backbone):
    """mmcv's RoIAlign reads its input as NCHW memory whatever the strides:
    the RoI features of the FPN's maps must equal those of contiguous
    copies at every level (they did not when the pyramid returned the
    token grid's channels-last layout: strides 8-32 were wrong)."""
    from mmdet.registry import MODELS
    from mmdet.structures.bbox import bbox2roi

    from mmceformer.models import SimplePyramid
    from mmceformer.testing import TINY_BACKBONES
    init_default_scope('mmdet')
    cfg = get_config('mmdet::_base_/models/mask-rcnn_r50_fpn.py')
    cfg.model.backbone = dict(
        type=backbone,
        attn_mode='eattn',
        prune_mode='skip',
        out_type='pyramid',
        **TINY_BACKBONES[backbone])
    cfg.model.neck.in_channels = list(SimplePyramid.out_channels(48))
    torch.manual_seed(0)
    model = MODELS.build(cfg.model).eval()
    # boxes of every size, so that RoIs map to every FPN level
    boxes = torch.tensor([[2., 3., 14., 15.], [4., 8., 60., 50.],
                          [0., 0., 127., 120.], [10., 30., 90., 70.],
                          [5., 5., 40., 110.]])
    rois = bbox2roi([boxes])
    extractor = model.roi_head.bbox_roi_extractor
    levels = extractor.map_roi_levels(rois, extractor.num_inputs)
    assert len(set(levels.tolist())) > 1
    with torch.no_grad():
        maps = model.neck(model.backbone(torch.randn(1, 3, 128, 128)))
        got = extractor(maps[:extractor.num_inputs], rois)
        want = extractor(
            tuple(m.contiguous() for m in maps[:extractor.num_inputs]), rois)
    torch.testing.assert_close(got, want, rtol=0, atol=0)

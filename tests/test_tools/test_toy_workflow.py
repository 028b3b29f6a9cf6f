"""The demo's two-stage workflow: the toy classification set, an mmpretrain
checkpoint arriving in Mask R-CNN's backbone through init_cfg, and the
adaptivity measure of token sampling."""
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from mmengine.config import Config

from mmceformer.datasets import make_toy_cls

ROOT = Path(__file__).resolve().parents[2]
CLS_CONFIG = ROOT / 'configs' / 'toy' / 'cls_ceformer_toy.py'
DET_CONFIG = ROOT / 'configs' / 'toy' / 'mask_rcnn_ceformer_toy.py'
sys.path.insert(0, str(ROOT / 'tools' / 'analysis'))


def test_toy_cls_label_is_the_colour_family_of_the_objects(tmp_path):
    paths = make_toy_cls(
        str(tmp_path),
        num_train=6,
        num_val=3,
        image_size=(64, 96),
        seed=3,
        label='colour')
    channel = {0: 2, 1: 1, 2: 0}  # red, green, blue -> BGR channel
    for split, count in (('train', 6), ('val', 3)):
        labels = json.loads(Path(paths[split]).read_text())
        coco = json.loads((tmp_path / 'annotations' /
                           f'instances_{split}.json').read_text())
        assert labels['metainfo']['classes'] == ['red', 'green', 'blue']
        assert len(labels['data_list']) == count
        for item, image in zip(labels['data_list'], coco['images']):
            assert item['img_path'] == image['file_name']
            pixels = cv2.imread(str(tmp_path / split / image['file_name']))
            assert pixels.shape == (64, 96, 3)
            anns = [
                a for a in coco['annotations'] if a['image_id'] == image['id']
            ]
            assert anns  # every image holds an object
            for ann in anns:
                # The object's own pixels: its family's channel dominates.
                mask = np.zeros(pixels.shape[:2], np.uint8)
                polygon = np.array(ann['segmentation'][0]).reshape(-1, 2)
                cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
                mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
                if mask.sum() < 5:
                    continue  # an object mostly covered by another
                colour = np.median(pixels[mask.astype(bool)], axis=0)
                assert colour.argmax() == channel[item['gt_label']]
    # mmpretrain reads it as the config says.
    from mmpretrain.datasets import BaseDataset
    dataset = BaseDataset(
        ann_file='annotations/labels_val.json',
        data_root=str(tmp_path),
        data_prefix='val/')
    first = json.loads(Path(paths['val']).read_text())['data_list'][0]
    assert list(dataset.get_cat_ids(0)) == [first['gt_label']]
    assert list(dataset.metainfo['classes']) == ['red', 'green', 'blue']
    assert Path(dataset.get_data_info(0)['img_path']).exists()


def test_toy_cls_label_is_the_shape_of_the_objects_at_the_asked_size(
        tmp_path):
    """label='shape': every object of an image is of the labelled shape,
    of a radius drawn from radius_range (one radius here, so each shape's
    area is known)."""
    paths = make_toy_cls(
        str(tmp_path),
        num_train=12,
        num_val=2,
        image_size=(64, 96),
        label='shape',
        radius_range=(0.25, 0.25),
        max_objects=1)
    labels = json.loads(Path(paths['train']).read_text())
    assert labels['metainfo'] == dict(
        classes=['circle', 'square', 'triangle'],
        label='shape',
        radius_range=[0.25, 0.25],
        max_objects=1)
    coco = json.loads(
        (tmp_path / 'annotations' / 'instances_train.json').read_text())
    radius = 0.25 * 64
    # Areas of the shapes of circumradius r, 1.2 r (triangle) and
    # sqrt(2) r / 1.2 (square: side 2 r / 1.2); the circle is a 24-gon.
    area = {
        0: 12 * radius**2 * np.sin(np.pi / 12),
        1: (2 * radius / 1.2)**2,
        2: 3 * np.sqrt(3) / 4 * (1.2 * radius)**2
    }
    assert len(coco['annotations']) == 12  # one object per image
    assert {item['gt_label'] for item in labels['data_list']} == {0, 1, 2}
    inside = 0
    for item, ann in zip(labels['data_list'], coco['annotations']):
        assert ann['category_id'] - 1 == item['gt_label']
        x, y, w, h = ann['bbox']
        if min(x, y) < 1 or x + w > 95 - 1 or y + h > 63 - 1:
            continue  # clipped at the border (corners reach past radius)
        inside += 1
        assert ann['area'] == pytest.approx(area[item['gt_label']], rel=0.01)
    assert inside >= 6


def test_toy_cls_colour_shape_label_names_both(tmp_path):
    paths = make_toy_cls(
        str(tmp_path), num_train=9, num_val=1, label='colour_shape')
    labels = json.loads(Path(paths['train']).read_text())
    assert labels['metainfo']['classes'][:4] == [
        'red circle', 'red square', 'red triangle', 'green circle'
    ]
    assert len(labels['metainfo']['classes']) == 9
    coco = json.loads(
        (tmp_path / 'annotations' / 'instances_train.json').read_text())
    channel = {0: 2, 1: 1, 2: 0}  # red, green, blue -> BGR channel
    for item, image in zip(labels['data_list'], coco['images']):
        family, shape = divmod(item['gt_label'], 3)
        pixels = cv2.imread(str(tmp_path / 'train' / image['file_name']))
        for ann in coco['annotations']:
            if ann['image_id'] != image['id']:
                continue
            assert ann['category_id'] - 1 == shape
            mask = np.zeros(pixels.shape[:2], np.uint8)
            polygon = np.array(ann['segmentation'][0]).reshape(-1, 2)
            cv2.fillPoly(mask, [np.round(polygon).astype(np.int32)], 1)
            mask = cv2.erode(mask, np.ones((3, 3), np.uint8))
            if mask.sum() >= 5:  # not mostly covered by another object
                colour = np.median(pixels[mask.astype(bool)], axis=0)
                assert colour.argmax() == channel[family]


@pytest.mark.parametrize('option, value, match', [
    ('label', 'size', "label must be one of \\['colour', 'colour_shape', 'shape'\\]"),
    ('radius_range', (0.2, 0.1), 'radius_range must satisfy'),
    ('radius_range', (0.1, 0.6), 'radius_range must satisfy'),
    ('max_objects', 0, 'max_objects must be >= 1'),
])
def test_toy_cls_rejects_bad_options(option, value, match, tmp_path):
    with pytest.raises(ValueError, match=match):
        make_toy_cls(str(tmp_path), num_train=1, num_val=1, **{option: value})
    assert not (tmp_path / 'train').exists()


@pytest.mark.parametrize(
    'config', sorted((ROOT / 'configs' / 'toy').glob('cls_*.py')),
    ids=lambda path: path.name)
def test_toy_cls_config_names_the_set_it_trains_on(config, tmp_path):
    """Its toy_set writes a set whose classes are the config's, and every
    loader reads the data_root the demo writes that set to."""
    cfg = Config.fromfile(str(config))
    paths = make_toy_cls(str(tmp_path), num_train=2, num_val=1, **cfg.toy_set)
    labels = json.loads(Path(paths['val']).read_text())
    assert labels['metainfo']['classes'] == list(cfg.classes)
    assert cfg.model.head.num_classes == len(cfg.classes)
    assert cfg.data_preprocessor.num_classes == len(cfg.classes)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert cfg[loader].dataset.data_root == cfg.data_root
    assert cfg.param_scheduler[-1].end == cfg.train_cfg.max_epochs


def test_demo_writes_a_set_with_other_options_again(tmp_path, capsys):
    """A classification set written with other options than the stage 1
    config's toy_set (another label, or by an older version that recorded
    none) is not pre-trained on silently: the demo writes it again; one
    written with them is kept."""
    sys.path.insert(0, str(ROOT / 'tools'))
    import demo
    toy_set = Config.fromfile(str(CLS_CONFIG)).toy_set
    root = str(tmp_path / 'toy_cls')
    label_file = tmp_path / 'toy_cls' / 'annotations' / 'labels_val.json'
    make_toy_cls(root, num_train=2, num_val=1, label='colour')
    demo.ensure_data(root, 2, 1, toy_set)
    assert 'writing it again' in capsys.readouterr().out
    labels = json.loads(label_file.read_text())
    assert labels['metainfo']['label'] == toy_set.label == 'shape'
    assert labels['metainfo']['max_objects'] == toy_set.max_objects
    written = label_file.stat().st_mtime_ns
    demo.ensure_data(root, 2, 1, toy_set)
    assert 'found in' in capsys.readouterr().out
    assert label_file.stat().st_mtime_ns == written
    del labels['metainfo']['radius_range']  # as an older version wrote it
    label_file.write_text(json.dumps(labels))
    demo.ensure_data(root, 2, 1, toy_set)
    assert 'writing it again' in capsys.readouterr().out


def test_demo_needs_a_stage_1_config_naming_its_set(tmp_path):
    sys.path.insert(0, str(ROOT / 'tools'))
    import demo
    config = tmp_path / 'cls_no_set.py'
    config.write_text("data_root = 'data/x/'\n")
    with pytest.raises(ValueError, match='has no toy_set'):
        demo.main([
            '--work-dir',
            str(tmp_path / 'work'), '--data-root',
            str(tmp_path / 'toy'), '--train-images', '1', '--val-images',
            '1', '--cls-config',
            str(config)
        ])
    assert not (tmp_path / 'work').exists()


TOY = ROOT / 'configs' / 'toy'
#: (stage 1, stage 2) pairs of the toy workflows
TOY_STAGES = [(CLS_CONFIG, DET_CONFIG),
              (TOY / 'cls_deit_toy.py', TOY / 'deformable_detr_deit_toy.py'),
              (TOY / 'cls_deit_toy.py', TOY / 'mask_rcnn_deit_toy.py')]


@pytest.mark.parametrize(
    'stage1,stage2', TOY_STAGES, ids=lambda path: path.stem)
def test_toy_configs_share_the_backbone(stage1, stage2):
    """Stage 1 pre-trains exactly the backbone stage 2 fine-tunes, and
    stage 2 loads the last checkpoint stage 1 writes by default."""
    cls_cfg = Config.fromfile(str(stage1))
    det_cfg = Config.fromfile(str(stage2))
    cls_backbone = cls_cfg.model.backbone.to_dict()
    det_backbone = det_cfg.model.backbone.to_dict()
    assert det_backbone['init_cfg']['checkpoint'] == (
        f'work_dirs/{stage1.stem}/epoch_{cls_cfg.train_cfg.max_epochs}.pth')
    # What a classifier needs differs; the parameters do not depend on it
    # (pos_embed is resized on loading; norm_eval freezes the stem BN's
    # statistics in detection, requires_grad=True is BN's default; the
    # attention modes share the parameters, so stage 1 is softmax for any).
    for key in ('out_type', 'prune_mode', 'init_cfg', 'img_size',
                'norm_eval', 'stem_norm_cfg', 'pyramid_levels', 'attn_mode'):
        cls_backbone.pop(key, None)
        det_backbone.pop(key, None)
    assert cls_backbone == det_backbone


@pytest.mark.mmcv_ops  # builds Mask R-CNN
def test_pretrained_backbone_arrives_in_mask_rcnn(tmp_path):
    """An mmpretrain checkpoint (Runner format) of the stage-1 classifier,
    loaded by the stage-2 detector's init_cfg with prefix='backbone.': every
    backbone tensor arrives, none is left over, values equal."""
    from mmdet.registry import MODELS as DET_MODELS
    from mmengine.registry import DefaultScope
    from mmpretrain.models.utils import resize_pos_embed
    from mmpretrain.registry import MODELS as CLS_MODELS
    torch.manual_seed(0)
    classifier = CLS_MODELS.build(Config.fromfile(str(CLS_CONFIG)).model)
    classifier.init_weights()
    checkpoint = tmp_path / 'epoch_1.pth'
    torch.save(
        dict(meta=dict(epoch=1), state_dict=classifier.state_dict()),
        checkpoint)
    sent = {
        k[len('backbone.'):]: v
        for k, v in classifier.state_dict().items()
        if k.startswith('backbone.')
    }

    det_cfg = Config.fromfile(str(DET_CONFIG))
    with DefaultScope.overwrite_default_scope('mmdet'):
        det_cfg.model.backbone.init_cfg.checkpoint = str(checkpoint)
        torch.manual_seed(1)
        detector = DET_MODELS.build(det_cfg.model)
        detector.init_weights()
        det_cfg.model.backbone.init_cfg = None
        torch.manual_seed(1)
        scratch = DET_MODELS.build(det_cfg.model)
        scratch.init_weights()
    arrived = detector.backbone.state_dict()
    # The pyramid that turns the tokens into FPN inputs is new in the
    # detector (as a neck would be); everything else comes from stage 1.
    new = set(arrived) - set(sent)
    assert new and all(name.startswith('pyramid.') for name in new)
    assert set(sent) <= set(arrived)
    # Pre-trained at 128 (8 x 8 tokens), fine-tuned at 256 (16 x 16): the
    # position embedding arrives resized, as mmpretrain's ViT resizes it.
    sent['pos_embed'] = resize_pos_embed(
        sent['pos_embed'], (8, 8), (16, 16),
        mode='bicubic',
        num_extra_tokens=1)
    for name, value in sent.items():
        torch.testing.assert_close(arrived[name], value, rtol=0, atol=0)
    # Not vacuous: without init_cfg the same seed gives other weights.
    differ = [
        name for name, value in scratch.backbone.state_dict().items()
        if name in sent and not torch.equal(value, sent[name])
    ]
    assert 'pos_embed' in differ and len(differ) > len(sent) // 2


# ---------------------------------------------------------------- adaptivity


def test_object_cells_marks_cells_holding_any_object_pixel():
    from token_adaptivity import object_cells
    square = np.array([[16, 16], [47, 16], [47, 47], [16, 47]], float)
    cells = object_cells([square], (64, 80), (1.0, 1.0))
    assert cells.shape == (4, 5)  # 64 / 16 x 80 / 16
    expected = np.zeros((4, 5), bool)
    expected[1:3, 1:3] = True
    np.testing.assert_array_equal(cells, expected)
    # One pixel past a cell's edge makes that cell an object cell too.
    cells = object_cells([square + [0, 1]], (64, 80), (1.0, 1.0))
    assert cells[3, 1] and cells[3, 2] and cells.sum() == 6
    # Original pixels are scaled to the network input; partial cells count.
    cells = object_cells([square * 2], (40, 40), (0.5, 0.5))
    assert cells.shape == (3, 3) and cells[1:3, 1:3].all() and cells.sum() == 4


def test_keep_rates_and_ratio():
    from token_adaptivity import keep_rates, ratio
    on_object = np.zeros((4, 4), bool)
    on_object[:2, :2] = True  # 4 object cells, 12 background cells
    kept = np.zeros((4, 4), bool)
    kept[0, :] = True  # 2 object + 2 background kept
    counts = keep_rates(kept, on_object)
    assert counts == dict(
        object_kept=2, object_cells=4, background_kept=2, background_cells=12)
    assert ratio(counts) == pytest.approx((2 / 4) / (2 / 12))
    assert np.isnan(ratio(keep_rates(kept, np.zeros((4, 4), bool))))
    with pytest.raises(ValueError, match='differ in shape'):
        keep_rates(kept, on_object[:3])


def test_ceiling_is_the_ratio_of_an_object_first_choice():
    from token_adaptivity import ceiling, keep_rates, ratio
    rng = np.random.default_rng(0)
    on_object = np.zeros((8, 8), bool)
    on_object[2:5, 1:6] = True  # 15 object cells, 49 background cells
    order = np.argsort(~on_object.ravel(), kind='stable')  # objects first
    for count in (20, 40, 63):
        best = np.zeros(64, bool)
        best[order[:count]] = True
        best_counts = keep_rates(best.reshape(8, 8), on_object)
        assert ceiling(best_counts) == pytest.approx(49 / (count - 15))
        assert ratio(best_counts) == pytest.approx(ceiling(best_counts))
        # Any other choice of as many tokens: same ceiling, lower ratio.
        other = np.zeros(64, bool)
        other[rng.permutation(64)[:count]] = True
        counts = keep_rates(other.reshape(8, 8), on_object)
        assert ceiling(counts) == ceiling(best_counts)
        assert ratio(counts) <= ceiling(counts)
    few = keep_rates(on_object & (np.arange(8) < 3), on_object)
    assert ceiling(few) == float('inf')  # 6 kept fit on the objects
    assert np.isnan(ceiling(keep_rates(on_object, np.zeros((8, 8), bool))))


def test_kept_cells_of_later_blocks_are_original_positions(tmp_path):
    """In 'drop' mode a block's index points into the already pruned
    sequence; the pictures and the adaptivity measure map it back to image
    cells, so a later block keeps a subset of an earlier block's cells."""
    import visualize_tokens
    from mmpretrain.registry import MODELS as CLS_MODELS
    torch.manual_seed(0)
    cfg = Config.fromfile(str(CLS_CONFIG))
    classifier = CLS_MODELS.build(cfg.model)
    classifier.init_weights()
    checkpoint = tmp_path / 'cls.pth'
    torch.save(dict(state_dict=classifier.state_dict()), checkpoint)
    make_toy_cls(str(tmp_path / 'toy'), num_train=1, num_val=1, seed=4)
    image = str(tmp_path / 'toy' / 'val' / 'val_00000.png')
    built = visualize_tokens.build(
        str(CLS_CONFIG),
        str(checkpoint),
        cfg_options={'model.backbone.keep_ratio': 0.5})
    assert built[1].backbone.layers[2].attn.prune_mode == 'drop'
    shown, panels = visualize_tokens.kept_grids(*built, image)
    assert shown.shape == (128, 128, 3)
    first, second = panels
    assert (first['index'], second['index']) == (2, 3)
    assert first['kept'].shape == (8, 8)
    assert 0 < second['kept'].sum() <= first['kept'].sum() < 64
    # Subset of the earlier block's cells (reading the index as cells, as
    # before, gave the top rows of the grid instead).
    assert not (second['kept'] & ~first['kept']).any()


@pytest.mark.parametrize('cls, size', [(False, (256, 256)), (True, (128, 128))])
def test_make_toy_coco_cli_takes_the_writers_defaults(cls, size, tmp_path):
    sys.path.insert(0, str(ROOT / 'tools'))
    import make_toy_coco
    make_toy_coco.main([str(tmp_path), '--train', '2', '--val', '1'] +
                       (['--cls'] if cls else []))
    image = cv2.imread(str(tmp_path / 'val' / 'val_00000.png'))
    assert image.shape[:2] == size
    assert (tmp_path / 'annotations' / 'labels_val.json').exists() == cls
    make_toy_coco.main(
        [str(tmp_path / 'small'), '--train', '1', '--val', '1', '--size',
         '32', '48'] + (['--cls'] if cls else []))
    assert cv2.imread(str(tmp_path / 'small' / 'train' /
                          'train_00000.png')).shape[:2] == (32, 48)
    if cls:
        labels = json.loads(
            (tmp_path / 'annotations' / 'labels_val.json').read_text())
        assert labels['metainfo'] == dict(
            classes=['red', 'green', 'blue'],
            label='colour',
            radius_range=[0.08, 0.2],
            max_objects=5)


def test_make_toy_coco_cli_label_and_objects(tmp_path, capsys):
    sys.path.insert(0, str(ROOT / 'tools'))
    import make_toy_coco
    make_toy_coco.main([
        str(tmp_path), '--cls', '--train', '1', '--val', '1', '--label',
        'shape', '--radius-range', '0.16', '0.4', '--max-objects', '3'
    ])
    labels = json.loads(
        (tmp_path / 'annotations' / 'labels_val.json').read_text())
    assert labels['metainfo'] == dict(
        classes=['circle', 'square', 'triangle'],
        label='shape',
        radius_range=[0.16, 0.4],
        max_objects=3)
    for option in (['--label', 'shape'], ['--max-objects', '3']):
        with pytest.raises(SystemExit):
            make_toy_coco.main([str(tmp_path / 'det'), *option])
        assert f'{option[0]} needs --cls' in capsys.readouterr().err

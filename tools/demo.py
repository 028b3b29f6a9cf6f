"""The built-in default job (`make demo`): the real two-stage workflow on
toy data, on a laptop CPU: mmpretrain pre-training -> Mask R-CNN fine-tuning
in mmdet -> COCO mAP -> where E-Attention keeps tokens.

    python tools/demo.py [--work-dir work_dirs/demo] [--from-scratch]
        [--data-root data/toy_coco] [--cls-config CONFIG]
        [--cls-data-root DIR]

1. writes the toy sets (tools/make_toy_coco.py; the classification set with
   --cls and the options of the stage 1 config's ``toy_set``, into its
   data_root) if they are absent, or the classification set again if it
   was written with other options;
2. pre-trains the backbone: tools/train.py configs/toy/cls_ceformer_toy.py
   (shape labels; --cls-config configs/toy/cls_ceformer_toy_colour.py for
   colour labels) in WORK_DIR/pretrain, the stand-in for ImageNet
   pre-training;
3. fine-tunes configs/toy/mask_rcnn_ceformer_toy.py from that checkpoint
   through the backbone's init_cfg (Pretrained, prefix='backbone.'), as the
   COCO configs do (WORK_DIR/detect); with --from-scratch stage 2 starts from
   random weights and stage 1 is skipped;
4. evaluates the last checkpoint with tools/test.py (COCO bbox and segm mAP,
   written to WORK_DIR/metrics.json);
5. measures the adaptivity of token sampling on the val set
   (tools/analysis/token_adaptivity.py: keep rate of tokens on objects /
   keep rate of background tokens, per pruning block, and the most that
   as many kept tokens could give; WORK_DIR/adaptivity.json);
6. draws predictions on validation images (WORK_DIR/vis/pred_*.png) and the
   tokens kept at each pruning block on one image (WORK_DIR/vis/tokens.png,
   tools/analysis/visualize_tokens.py).

Both trainings run with --resume: re-running the command after an
interruption continues where it stopped.
"""
import argparse
import json
import os
import os.path as osp
import re
import subprocess
import sys

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIG = osp.join(ROOT, 'configs', 'toy', 'mask_rcnn_ceformer_toy.py')
CLS_CONFIG = osp.join(ROOT, 'configs', 'toy', 'cls_ceformer_toy.py')
sys.path.insert(0, osp.join(ROOT, 'tools', 'analysis'))
import token_adaptivity  # noqa: E402


def data_options(data_root):
    root = data_root.rstrip('/') + '/'
    ann = root + 'annotations/instances_val.json'
    return [
        f'train_dataloader.dataset.data_root={root}',
        f'val_dataloader.dataset.data_root={root}',
        f'test_dataloader.dataset.data_root={root}',
        f'val_evaluator.ann_file={ann}', f'test_evaluator.ann_file={ann}'
    ]


def cls_data_options(data_root):
    root = data_root.rstrip('/') + '/'
    return [
        f'{loader}.dataset.data_root={root}'
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')
    ]


def ensure_data(data_root, num_train, num_val, toy_set=None):
    """Write a toy set unless it is there already: the COCO instance set,
    or with ``toy_set`` (``make_toy_cls``'s options) the classification
    set, which is written again if its label files record other options."""
    from mmceformer.datasets import make_toy_cls, make_toy_coco
    classification = toy_set is not None
    last = 'labels_val.json' if classification else 'instances_val.json'
    kind = 'classification' if classification else 'COCO'
    path = osp.join(data_root, 'annotations', last)
    if osp.exists(path):
        if classification:
            # JSON has no tuples: compare as the label file stores them.
            wanted = json.loads(json.dumps(dict(toy_set)))
            with open(path) as f:
                metainfo = json.load(f)['metainfo']
            recorded = {key: metainfo.get(key) for key in wanted}
        if not classification or recorded == wanted:
            print(f'[demo] toy {kind} set found in {data_root}')
            return
        print(f'[demo] the toy {kind} set in {data_root} was written with '
              f'{recorded}, not {wanted}: writing it again')
    print(f'[demo] writing the toy {kind} set to {data_root} '
          f'({num_train} train / {num_val} val images)')
    if classification:
        make_toy_cls(data_root, num_train, num_val, **toy_set)
    else:
        make_toy_coco(data_root, num_train, num_val)


def train(config, work_dir, options):
    """tools/train.py with --resume (continues an interrupted run); returns
    the path of the last checkpoint."""
    command = [
        sys.executable,
        osp.join(ROOT, 'tools', 'train.py'), config, '--work-dir', work_dir,
        '--resume', '--cfg-options', *options
    ]
    print('[demo] ' + ' '.join(command[1:4]) + ' ...', flush=True)
    subprocess.run(command, check=True)
    with open(osp.join(work_dir, 'last_checkpoint')) as f:
        return f.read().strip()


def test(work_dir, checkpoint, options):
    """tools/test.py; returns its metrics (and prints its output)."""
    command = [
        sys.executable,
        osp.join(ROOT, 'tools', 'test.py'), CONFIG, checkpoint, '--work-dir',
        osp.join(work_dir, 'test'), '--cfg-options', *options
    ]
    print('[demo] ' + ' '.join(command[1:4]) + ' ...', flush=True)
    result = subprocess.run(
        command, check=True, stdout=subprocess.PIPE, text=True)
    print(result.stdout)
    metrics = {}
    for match in re.finditer(r'^(coco/\w+): ([-\d.]+)$', result.stdout,
                             re.MULTILINE):
        metrics[match.group(1)] = float(match.group(2))
    with open(osp.join(work_dir, 'metrics.json'), 'w') as f:
        json.dump(metrics, f, indent=1)
    return metrics


def draw_pictures(work_dir, checkpoint, data_root, num_images=4,
                  adaptivity=None):
    """Predictions on the first validation images, and kept tokens of the
    first (object cells outlined; titled with this image's and, if given,
    the val set's adaptivity)."""
    import mmcv
    from mmdet.apis import inference_detector, init_detector
    from mmdet.registry import VISUALIZERS
    from mmengine.config import Config
    import visualize_tokens

    vis_dir = osp.join(work_dir, 'vis')
    os.makedirs(vis_dir, exist_ok=True)
    cfg = Config.fromfile(CONFIG)
    cfg.model.backbone.pop('init_cfg', None)
    model = init_detector(cfg, checkpoint, device='cpu')
    visualizer = VISUALIZERS.build(
        dict(type='DetLocalVisualizer', name='demo'))
    visualizer.dataset_meta = model.dataset_meta
    image_dir = osp.join(data_root, 'val')
    names = sorted(os.listdir(image_dir))[:num_images]
    written = []
    for name in names:
        path = osp.join(image_dir, name)
        result = inference_detector(model, path)
        out_file = osp.join(vis_dir, 'pred_' + osp.splitext(name)[0] + '.png')
        visualizer.add_datasample(
            name,
            mmcv.imread(path, channel_order='rgb'),
            result,
            draw_gt=False,
            pred_score_thr=0.5,
            out_file=out_file)
        written.append(out_file)
    shown, panels = visualize_tokens.kept_tokens(CONFIG, checkpoint,
                                                 osp.join(image_dir, names[0]))
    images, polygons = token_adaptivity.read_objects(
        osp.join(data_root, 'annotations', 'instances_val.json'))
    image = next(i for i in images if i['file_name'] == names[0])
    on_object = token_adaptivity.image_object_cells(
        image, polygons[image['id']], shown.shape)
    for panel in panels:
        rate = token_adaptivity.ratio(
            token_adaptivity.keep_rates(panel['kept'], on_object))
        panel['note'] = f'this image: object / background {rate:.2f}'
        panel['objects'] = on_object
    title = 'tokens kept by E-Attention'
    if adaptivity:
        title += '\nval set, object / background keep rate: ' + ', '.join(
            f"{row['ratio']:.2f} (block {row['block']})"
            for row in adaptivity)
    written.append(
        visualize_tokens.draw(shown, panels, osp.join(vis_dir, 'tokens.png'),
                              title))
    return written


def measure_adaptivity(work_dir, checkpoint, data_root):
    """Adaptivity of token sampling on the toy val set, per pruning block;
    printed and written to WORK_DIR/adaptivity.json."""
    rows = token_adaptivity.measure(
        CONFIG, checkpoint,
        osp.join(data_root, 'annotations', 'instances_val.json'),
        osp.join(data_root, 'val'))
    print('[demo] token sampling on the val set (1.0 = not adaptive):')
    print(token_adaptivity.format_table(rows))
    with open(osp.join(work_dir, 'adaptivity.json'), 'w') as f:
        json.dump(rows, f, indent=1)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument(
        '--work-dir', default=osp.join(ROOT, 'work_dirs', 'demo'))
    parser.add_argument(
        '--data-root', default=osp.join(ROOT, 'data', 'toy_coco'))
    parser.add_argument(
        '--cls-config',
        default=CLS_CONFIG,
        help='stage 1 config; its toy_set names the set it trains on')
    parser.add_argument(
        '--cls-data-root', help="default: the stage 1 config's data_root")
    parser.add_argument('--train-images', type=int, default=200)
    parser.add_argument('--val-images', type=int, default=50)
    parser.add_argument('--cls-train-images', type=int, default=2000)
    parser.add_argument('--cls-val-images', type=int, default=200)
    parser.add_argument('--pictures', type=int, default=4)
    parser.add_argument(
        '--from-scratch',
        action='store_true',
        help='skip pre-training: Mask R-CNN from random weights')
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for detection (train and test)')
    parser.add_argument(
        '--cls-cfg-options',
        nargs='+',
        default=[],
        help='extra key=value overrides for pre-training')
    args = parser.parse_args(argv)
    ensure_data(args.data_root, args.train_images, args.val_images)
    options = data_options(args.data_root)
    if args.from_scratch:
        options.append('model.backbone.init_cfg=None')
    else:
        from mmengine.config import Config
        cls_cfg = Config.fromfile(args.cls_config)
        if 'toy_set' not in cls_cfg:
            raise ValueError(
                f'--cls-config {args.cls_config} has no toy_set (the '
                'make_toy_cls options of its set, as in '
                'configs/toy/cls_ceformer_toy.py)')
        cls_data_root = args.cls_data_root or osp.join(
            ROOT, cls_cfg.data_root)
        ensure_data(cls_data_root, args.cls_train_images,
                    args.cls_val_images, cls_cfg.toy_set)
        pretrained = train(
            args.cls_config, osp.join(args.work_dir, 'pretrain'),
            cls_data_options(cls_data_root) + args.cls_cfg_options)
        print(f'[demo] stage 2 starts from {pretrained}')
        options.append(f'model.backbone.init_cfg.checkpoint={pretrained}')
    options += args.cfg_options
    checkpoint = train(CONFIG, osp.join(args.work_dir, 'detect'), options)
    metrics = test(args.work_dir, checkpoint, options)
    adaptivity = measure_adaptivity(args.work_dir, checkpoint, args.data_root)
    pictures = draw_pictures(args.work_dir, checkpoint, args.data_root,
                             args.pictures, adaptivity)
    print('[demo] done.')
    for key in ('coco/bbox_mAP', 'coco/bbox_mAP_50', 'coco/segm_mAP'):
        print(f'[demo] {key}: {metrics.get(key)}')
    for row in adaptivity:
        print(f"[demo] block {row['block']}: tokens on objects kept "
              f"{row['ratio']:.2f}x as often as background tokens (at most "
              f"{row['ceiling']:.2f}x with as many kept)")
    print('[demo] pictures: ' + ', '.join(pictures))
    return metrics, pictures, adaptivity


if __name__ == '__main__':
    main()

"""Configs shipped inside the package, inherited as ``mmceformer::NAME``.

OpenMMLab packages ship their configs under ``<package>/.mim/configs`` (a
wheel copies them there, an editable install links them; see setup.py),
and mmengine resolves a base ``'mmdet::swin/....py'`` to the installed
package's tree. Its resolver knows only a fixed list of packages, wants a
sub-directory in the name, and finds editable installs by a path guess
that PEP 660 installs break. :func:`register_config_package` (run on
``import mmceformer``) resolves ``mmceformer::NAME`` itself, before
mmengine's resolver, to this package's ``.mim/configs/NAME``, with no
scope of its own: our configs name theirs (they inherit mmdet's or
mmpretrain's), so an inherited config builds exactly as the file would.

It needs ``mmceformer`` imported before the config is read, as our
``tools/train.py`` and ``tools/test.py`` do; a tool that imports it only
through the config's ``custom_imports`` reads the bases first.
"""
import os.path as osp

#: Where the shipped configs are: ``mmceformer/.mim/configs``.
CONFIG_ROOT = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))),
                       '.mim', 'configs')
PREFIX = 'mmceformer::'


def shipped_config(name: str) -> str:
    """Path of a config shipped in the package, e.g.
    ``shipped_config('mask_rcnn_ceformer_s_coco.py')``."""
    path = osp.join(CONFIG_ROOT, name)
    if not osp.isfile(path):
        raise FileNotFoundError(
            f"'{PREFIX}{name}': no config {name!r} in {CONFIG_ROOT} (the "
            'configs of the installed mmceformer; an editable install links '
            'them there when pip installs it)')
    return path


def register_config_package() -> None:
    """Let mmengine's ``Config`` resolve ``mmceformer::NAME`` bases (once)."""
    from mmengine.config import Config
    resolve = Config._get_cfg_path
    if getattr(resolve, '_mmceformer', False):
        return

    def _get_cfg_path(cfg_path: str, filename: str):
        if cfg_path.startswith(PREFIX):
            return shipped_config(cfg_path[len(PREFIX):]), None
        return resolve(cfg_path, filename)

    _get_cfg_path._mmceformer = True
    Config._get_cfg_path = staticmethod(_get_cfg_path)

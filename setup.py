import os
import os.path as osp
import re
import shutil
import sys

from setuptools import find_packages, setup

HERE = osp.dirname(osp.abspath(__file__))
#: What OpenMMLab packages ship under ``<package>/.mim``: ``mim train/test``
#: and mmengine's ``'mmceformer::CONFIG'`` paths look for them there.
MIM_FILES = ('configs', 'tools', 'model-index.yml')


def read_version():
    with open(osp.join(HERE, 'mmceformer', 'version.py')) as f:
        return re.search(r"__version__ = '([^']+)'", f.read()).group(1)


def read_requirements(name):
    """Requirement lines of requirements/<name>.txt, comments dropped."""
    with open(osp.join(HERE, 'requirements', name)) as f:
        lines = (line.split('#')[0].strip() for line in f)
        return [line for line in lines if line and not line.startswith('-')]


def add_mim_extension():
    """Put :data:`MIM_FILES` into ``mmceformer/.mim``: relative symlinks for
    an editable install (the configs stay those of the checkout), copies
    when building an sdist or a wheel (they travel inside the package).
    Other commands (metadata, egg_info) leave ``.mim`` as it is."""
    commands = set(sys.argv[1:])
    if commands & {'develop', 'editable_wheel'}:
        mode = 'symlink'
    elif commands & {'sdist', 'bdist_wheel', 'build', 'build_py', 'install'}:
        mode = 'copy'
    else:
        return
    mim_dir = osp.join(HERE, 'mmceformer', '.mim')
    os.makedirs(mim_dir, exist_ok=True)
    for name in MIM_FILES:
        src = osp.join(HERE, name)
        dst = osp.join(mim_dir, name)
        if not osp.exists(src):
            continue
        if osp.islink(dst) or osp.isfile(dst):
            os.remove(dst)
        elif osp.isdir(dst):
            shutil.rmtree(dst)
        if mode == 'symlink':
            os.symlink(osp.relpath(src, mim_dir), dst)
        elif osp.isdir(src):
            shutil.copytree(
                src, dst, ignore=shutil.ignore_patterns('__pycache__'))
        else:
            shutil.copyfile(src, dst)


def mim_package_data():
    """Every file under ``mmceformer/.mim``, relative to the package."""
    root = osp.join(HERE, 'mmceformer')
    files = []
    for dirpath, _, names in os.walk(osp.join(root, '.mim'),
                                     followlinks=True):
        files += [
            osp.relpath(osp.join(dirpath, n), root) for n in names
            if not n.endswith('.pyc')
        ]
    return files


add_mim_extension()
setup(
    name='mmceformer',
    version=read_version(),
    description='E-Attention and CEFormer: efficient vision transformer '
    'backbones for mmpretrain and mmdet',
    long_description=open(osp.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(exclude=('tests', 'tests.*', 'configs', 'tools')),
    package_data={'mmceformer': mim_package_data()},
    python_requires='>=3.8',
    # Compatible ranges, as OpenMMLab packages declare them; the exact
    # stack that set-up and CI install is requirements/constraints.txt.
    # mmcv is in requirements/mminstall.txt (the 'mim' extra), as mmdet and
    # mmpretrain list it: it must come with its compiled ops, from
    # OpenMMLab's wheels (`mim install`) or a build (tools/setup_env.sh).
    # torch >= 2.1: F.scaled_dot_product_attention(scale=...) and the
    # oldest torch with OpenMMLab's prebuilt mmcv 2.1 wheels (tested in CI).
    install_requires=['torch>=2.1'] + read_requirements('runtime.txt'),
    extras_require={
        'mim': read_requirements('mminstall.txt'),
        'tests': read_requirements('tests.txt'),
        'deploy': read_requirements('deploy.txt'),
    },
    license='Apache License 2.0',
    classifiers=[
        'License :: OSI Approved :: Apache Software License',
        'Programming Language :: Python :: 3',
        'Topic :: Scientific/Engineering :: Artificial Intelligence',
    ],
    zip_safe=False,
)

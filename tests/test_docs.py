"""README and docs/ are true to the code: their Python examples run, every
file, make target, registered type and backbone option they name exists."""
import ast
import inspect
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / 'README.md'] + sorted((ROOT / 'docs').glob('*.md'))
PATH = re.compile(r'(?<![\w/.])((?:configs|tools|docs|mmceformer|tests)/'
                  r'[\w/.-]*\w\.(?:py|sh|md|png|yml|json))')
#: a Markdown link: (target, anchor), either may be empty
LINK = re.compile(r'\]\(([^)#\s]*)(?:#([^)\s]*))?\)')
CODE = re.compile(r'```(\w*)\n(.*?)```', re.S)


def code_blocks(path, lang):
    return [body for tag, body in CODE.findall(path.read_text())
            if tag == lang]


def runnable_blocks():
    """The README's ```python blocks, but for config snippets (which start
    with a ``# config`` comment)."""
    return [
        b for b in code_blocks(ROOT / 'README.md', 'python')
        if not b.lstrip().startswith('# config')
    ]


def test_readme_has_a_runnable_example():
    assert runnable_blocks()


@pytest.mark.parametrize('index', range(len(runnable_blocks())))
def test_readme_python_examples_run_as_written(index, capsys):
    exec(compile(runnable_blocks()[index], f'README block {index}', 'exec'),
         {'__name__': '__readme__'})


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_path_and_link_exists(doc):
    text = doc.read_text()
    missing = [p for p in PATH.findall(text) if not (ROOT / p).exists()
               and not (doc.parent / p).exists()]
    for link, _ in LINK.findall(text):
        if not link or '://' in link:
            continue
        if not (doc.parent / link).exists():
            missing.append(link)
    assert not missing, f'{doc.name} names missing files: {missing}'


def heading_anchors(text):
    """The anchors GitHub gives a Markdown file's headings: lower case,
    punctuation but ``-`` and ``_`` dropped, spaces as ``-``, a repeated
    heading numbered ``-1``, ``-2``, ... (fenced code has no headings)."""
    anchors, seen = set(), {}
    for line in CODE.sub('', text).splitlines():
        heading = re.match(r'#{1,6}\s+(.*?)\s*$', line)
        if heading:
            slug = re.sub(r'[^\w\- ]', '', heading.group(1).lower())
            slug = slug.replace(' ', '-')
            count = seen.get(slug, 0)
            seen[slug] = count + 1
            anchors.add(slug if not count else f'{slug}-{count}')
    return anchors


def test_heading_anchors_follow_github():
    text = '# A `b`: c (d, 1)\n## A `b`: c (d, 1)\n```\n# not one\n```\n'
    assert heading_anchors(text) == {'a-b-c-d-1', 'a-b-c-d-1-1'}


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_link_anchor_is_a_heading(doc):
    """A link to ``file.md#anchor`` (or ``#anchor`` in the same file) lands
    on a heading: sections are renamed, links must follow."""
    broken, anchors = [], {}  # anchors per linked file, read once
    for target, anchor in LINK.findall(doc.read_text()):
        path = doc.parent / target if target else doc
        if not anchor or '://' in target or path.suffix != '.md' \
                or not path.exists():
            continue  # web pages; missing files fail the test above
        if path not in anchors:
            anchors[path] = heading_anchors(path.read_text())
        if anchor not in anchors[path]:
            broken.append(f'{target}#{anchor}')
    assert not broken, f'{doc.name} links to missing headings: {broken}'


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_make_target_exists(doc):
    makefile = (ROOT / 'Makefile').read_text()
    targets = set(re.findall(r'^([\w-]+):', makefile, re.M))
    named = set(re.findall(r'`make ([\w-]+)', doc.read_text()))
    for block in code_blocks(doc, 'bash'):
        named |= set(re.findall(r'^make ([\w-]+)', block, re.M))
    assert named <= targets, named - targets


def _accepted(cls):
    """Keyword arguments a class takes: its own and, where it passes
    ``**kwargs`` on, its bases'."""
    names = set()
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters
        names |= set(params)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return names


def _type_dicts(source):
    """(type, [keywords]) of every ``dict(type='...', ...)`` in a snippet."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, 'id',
                                                  None) == 'dict':
            kw = {k.arg: k.value for k in node.keywords if k.arg}
            if isinstance(kw.get('type'), ast.Constant):
                found.append((kw['type'].value, [k for k in kw
                                                 if k != 'type']))
    return found


@pytest.mark.parametrize('doc', DOCS, ids=lambda p: p.name)
def test_every_backbone_option_in_examples_exists(doc):
    """Each ``dict(type='X', option=...)`` of our models in an example, and
    each ``model.backbone.option=`` of a command line, is an argument that
    the class takes."""
    from mmpretrain.registry import MODELS

    import mmceformer  # noqa: F401
    ours = {'CEFormer', 'EAttentionViT', 'EAttentionSwin', 'EAttention',
            'SimplePyramid'}
    wrong = []
    for block in code_blocks(doc, 'python'):
        for name, keys in _type_dicts(block):
            if name not in ours:
                continue
            accepted = _accepted(MODELS.get(name))
            wrong += [f'{name}.{k}' for k in keys if k not in accepted]
    options = re.findall(r'model\.backbone\.(\w+)=', doc.read_text())
    backbones = set().union(*(_accepted(MODELS.get(n)) for n in ours - {
        'EAttention', 'SimplePyramid'}))
    wrong += [o for o in options if o not in backbones]
    assert not wrong, f'{doc.name} names options that do not exist: {wrong}'

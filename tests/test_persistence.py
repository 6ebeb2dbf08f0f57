"""torch_utils.persistence: self-contained pickles in StyleGAN2-ADA's format."""

import copy
import importlib
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
import torch

from torch_utils import persistence

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Written the way official StyleGAN2-ADA network code is: it only uses the official module names.
MODULE_SRC = textwrap.dedent('''
    import torch
    from torch_utils import misc, persistence

    OFFSET = 0.5

    @persistence.persistent_class
    class Block(torch.nn.Module):
        def __init__(self, channels):
            super().__init__()
            self.linear = torch.nn.Linear(channels, channels)
            self.register_buffer('gain', torch.linspace(0.5, 1.5, channels))

        def forward(self, x):
            misc.assert_shape(x, [None, self.linear.in_features])
            return torch.tanh(self.linear(x)) * self.gain

    @persistence.persistent_class
    class Net(torch.nn.Module):
        def __init__(self, channels, depth=2, options=None):
            super().__init__()
            self.blocks = torch.nn.ModuleList([Block(channels) for _ in range(depth)])
            self.options = options

        def forward(self, x):
            for block in self.blocks:
                x = block(x) + misc.constant(OFFSET, device=x.device)
            return x
''')


@pytest.fixture
def temp_module(tmp_path):
    """Import MODULE_SRC from a uniquely named file in a temporary directory; undo the import afterwards."""
    module_dir = tmp_path / 'modules'
    module_dir.mkdir()
    name = f'persistence_test_net_{os.getpid()}_{abs(hash(str(tmp_path))) % 10**8}'
    (module_dir / f'{name}.py').write_text(MODULE_SRC)
    sys.path.insert(0, str(module_dir))
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop(name, None)


@pytest.fixture
def clean_import_hooks():
    saved = list(persistence._import_hooks)
    yield
    persistence._import_hooks[:] = saved


def _capture_meta(data):
    """Unpickle `data` but return the meta dicts given to _reconstruct_persistent_obj instead of objects."""
    metas = []

    class Capturing(pickle.Unpickler):
        def find_class(self, module, name):
            if (module, name) == ('torch_utils.persistence', '_reconstruct_persistent_obj'):
                return lambda meta: metas.append(meta) or len(metas) - 1
            return super().find_class(module, name)

    Capturing(__import__('io').BytesIO(data)).load()
    return metas


def test_pickle_layout_matches_official_format(temp_module):
    net = temp_module.Net(3, depth=1)
    metas = _capture_meta(pickle.dumps(net))
    outer = metas[-1]  # inner objects are rebuilt first
    assert set(outer) == {'type', 'version', 'module_src', 'class_name', 'state'}
    assert outer['type'] == 'class' and outer['version'] == 6 and outer['class_name'] == 'Net'
    assert outer['module_src'] == MODULE_SRC
    assert outer['state']['_init_args'] == (3,)
    assert outer['state']['_init_kwargs'] == {'depth': 1}
    assert {meta['class_name'] for meta in metas} == {'Net', 'Block'}


def test_round_trip_in_fresh_process_without_the_defining_module(temp_module, tmp_path):
    torch.manual_seed(0)
    net = temp_module.Net(4, depth=3, options={'note': 'kept'})
    x = torch.randn(5, 4)
    with torch.no_grad():
        expected = net(x)
    pkl_path = tmp_path / 'net.pkl'
    pkl_path.write_bytes(pickle.dumps({'net': net, 'x': x}))

    script = textwrap.dedent(f'''
        import importlib.util, pickle, sys, torch
        assert importlib.util.find_spec({temp_module.__name__!r}) is None
        data = pickle.load(open({str(pkl_path)!r}, 'rb'))
        net = data['net']
        with torch.no_grad():
            y = net(data['x'])
        torch.save(dict(y=y, module=type(net).__module__, args=net.init_args, kwargs=dict(net.init_kwargs)),
                   {str(tmp_path / 'out.pt')!r})
    ''')
    work_dir = tmp_path / 'elsewhere'
    work_dir.mkdir()
    env = dict(os.environ, PYTHONPATH=REPO_ROOT)
    result = subprocess.run([sys.executable, '-c', script], cwd=work_dir, env=env, capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    out = torch.load(tmp_path / 'out.pt')
    assert torch.equal(out['y'], expected)
    assert out['module'].startswith('_imported_module_')
    assert out['args'] == (4,) and out['kwargs'] == {'depth': 3, 'options': {'note': 'kept'}}


class _OfficialLayoutPickle:
    """Pickles exactly as StyleGAN2-ADA's persistence writes a persistent object."""

    def __init__(self, meta):
        self.meta = meta

    def __reduce__(self):
        return persistence._reconstruct_persistent_obj, (self.meta,)


def test_hand_built_official_pickle_loads_and_runs():
    src = textwrap.dedent('''
        import torch
        from torch_utils import persistence

        @persistence.persistent_class
        class Affine(torch.nn.Module):
            def __init__(self, scale):
                super().__init__()
                self.weight = torch.nn.Parameter(torch.full([2], float(scale)))

            def forward(self, x):
                return x * self.weight + 1
    ''')
    plain = torch.nn.Module()
    plain.weight = torch.nn.Parameter(torch.tensor([3.0, -2.0]))
    state = dict(plain.__getstate__(), _init_args=(3,), _init_kwargs={})
    meta = {'type': 'class', 'version': 6, 'module_src': src, 'class_name': 'Affine', 'state': state}
    data = pickle.dumps(_OfficialLayoutPickle(meta))

    obj = pickle.loads(data)
    assert type(obj).__name__ == 'Affine' and persistence.is_persistent(obj)
    assert torch.equal(obj(torch.tensor([1.0, 1.0])), torch.tensor([4.0, -1.0]))
    assert obj.init_args == (3,)
    assert [name for name, _ in obj.named_parameters()] == ['weight']


def test_wrong_format_version_is_a_clear_error():
    meta = {'type': 'class', 'version': 5, 'module_src': 'X = 1\n', 'class_name': 'X', 'state': {}}
    with pytest.raises(persistence.PersistenceError, match='format version 5'):
        pickle.loads(pickle.dumps(_OfficialLayoutPickle(meta)))


def test_broken_stored_source_names_the_class_and_the_cause():
    src = 'from torch_utils import no_such_module\n'
    meta = {'type': 'class', 'version': 6, 'module_src': src, 'class_name': 'Gone', 'state': {}}
    with pytest.raises(persistence.PersistenceError, match='Cannot rebuild Gone.*no_such_module'):
        pickle.loads(pickle.dumps(_OfficialLayoutPickle(meta)))
    assert src not in persistence._src_to_module_dict  # a later fixed attempt is not poisoned


def test_init_args_and_kwargs_are_recorded_as_deep_copies(temp_module):
    options = {'levels': [1, 2]}
    net = temp_module.Net(6, depth=2, options=options)
    options['levels'].append(3)
    assert net.init_args == (6,)
    assert net.init_kwargs == {'depth': 2, 'options': {'levels': [1, 2]}}
    assert net.init_kwargs.depth == 2  # EasyDict
    net.init_kwargs['options']['levels'].clear()  # a copy: the record stays intact
    assert net.init_kwargs.options == {'levels': [1, 2]}
    rebuilt = type(net)(*net.init_args, **net.init_kwargs)
    assert [p.shape for p in rebuilt.parameters()] == [p.shape for p in net.parameters()]


def test_decorated_class_keeps_its_identity(temp_module):
    cls = temp_module.Net
    assert cls.__name__ == 'Net' and cls.__module__ == temp_module.__name__
    assert cls._orig_class_name == 'Net' and cls._orig_module_src == MODULE_SRC
    assert persistence.is_persistent(cls) and persistence.persistent_class(cls) is cls
    assert not persistence.is_persistent(torch.nn.Linear(1, 1))


def test_deepcopy_gives_an_independent_copy_of_the_same_class(temp_module):
    net = temp_module.Net(3)
    clone = copy.deepcopy(net)
    assert type(clone) is type(net) and type(clone.blocks[0]) is type(net.blocks[0])
    x = torch.ones(2, 3)
    assert torch.equal(clone(x), net(x))
    with torch.no_grad():
        clone.blocks[0].linear.weight.add_(1)
    assert not torch.equal(clone(x), net(x))
    assert clone.init_args == (3,)


def test_unpickling_in_the_defining_process_reuses_the_imported_module(temp_module):
    net = temp_module.Net(2)
    assert type(pickle.loads(pickle.dumps(net))) is temp_module.Net


def test_import_hook_can_rewrite_meta(temp_module, clean_import_hooks):
    net = temp_module.Net(3, depth=1)
    data = pickle.dumps(net)
    seen = []

    @persistence.import_hook
    def patch_offset(meta):
        seen.append((meta.class_name, type(meta.state).__name__))
        meta.module_src = meta.module_src.replace('OFFSET = 0.5', 'OFFSET = 10.5')
        return meta

    patched = pickle.loads(data)
    x = torch.zeros(1, 3)
    assert torch.allclose(patched(x), net(x) + 10.0)
    assert ('Net', 'EasyDict') in seen and ('Block', 'EasyDict') in seen


def test_import_hook_returning_none_is_reported(temp_module, clean_import_hooks):
    data = pickle.dumps(temp_module.Net(2))
    persistence.import_hook(lambda meta: None)
    with pytest.raises(persistence.PersistenceError, match='returned None'):
        pickle.loads(data)


def test_identical_source_is_executed_once():
    src = 'import torch\nfrom torch_utils import persistence\nCOUNTER = []\nCOUNTER.append(1)\n'
    first = persistence._src_to_module(src)
    second = persistence._src_to_module(src)
    other = persistence._src_to_module(src + '# different\n')
    assert first is second and first is not other
    assert first.COUNTER == [1]
    assert sys.modules[first.__name__] is first and first.__name__.startswith('_imported_module_')
    assert persistence._module_to_src(first) == src


def test_repeated_loads_of_a_foreign_pickle_share_one_class():
    src = textwrap.dedent('''
        import torch
        from torch_utils import persistence

        @persistence.persistent_class
        class Foreign(torch.nn.Module):
            pass
    ''')
    state = dict(torch.nn.Module().__getstate__(), _init_args=(), _init_kwargs={})
    meta = {'type': 'class', 'version': 6, 'module_src': src, 'class_name': 'Foreign', 'state': state}
    data = pickle.dumps(_OfficialLayoutPickle(meta))
    first, second = pickle.loads(data), pickle.loads(data)
    assert type(first) is type(second)
    # Re-pickling a loaded object embeds the same source again.
    assert _capture_meta(pickle.dumps(first))[0]['module_src'] == src


def test_unpicklable_attribute_fails_at_construction(tmp_path):
    (tmp_path / 'persistence_test_lambda.py').write_text(textwrap.dedent('''
        import torch
        from torch_utils import persistence

        @persistence.persistent_class
        class HoldsLambda(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.fn = lambda x: x
    '''))
    sys.path.insert(0, str(tmp_path))
    try:
        module = importlib.import_module('persistence_test_lambda')
        with pytest.raises(persistence.PersistenceError, match='HoldsLambda would not be picklable'):
            module.HoldsLambda()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop('persistence_test_lambda', None)


def test_class_not_at_module_top_level_is_refused():
    def make_local_class():
        @persistence.persistent_class
        class LocalOnly(torch.nn.Module):
            pass
        return LocalOnly

    local_class = make_local_class()
    with pytest.raises(persistence.PersistenceError, match='LocalOnly must be defined at the top level'):
        local_class()

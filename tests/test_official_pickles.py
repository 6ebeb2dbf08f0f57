"""Pickles in the official StyleGAN2-ADA layout load in generate.py.

No official pickle can be downloaded here, so the fixture is built from the documented structure:
a dict with G, D, G_ema, augment_pipe and an EasyDict of training-set kwargs, whose networks are
persistent objects carrying their own module source. That source (written below, not ours from
networks/) calls only the interface names official network code calls in torch_utils and dnnlib.
The pickle is written with numpy-1.x module names (`numpy.core.*`), as old pickles have them.
"""

import os
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import PIL.Image
import torch

import dnnlib
from training.snapshot import load_network_pkl

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FOREIGN_NETWORK_SOURCE = textwrap.dedent('''
    import numpy as np
    import torch
    from torch_utils import misc
    from torch_utils import persistence
    from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d


    @persistence.persistent_class
    class TinyMapping(torch.nn.Module):
        def __init__(self, z_dim, c_dim, w_dim, num_ws):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
            self.weight = torch.nn.Parameter(torch.randn([w_dim, z_dim]))
            self.bias = torch.nn.Parameter(torch.zeros([w_dim]))
            self.register_buffer('w_avg', torch.zeros([w_dim]))

        def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False):
            misc.assert_shape(z, [None, self.z_dim])
            x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
            x = bias_act.bias_act(x.matmul(self.weight.t() / np.sqrt(self.z_dim)), self.bias, act='lrelu')
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
            if truncation_psi != 1:
                x = self.w_avg.lerp(x, truncation_psi)
            return x


    @persistence.persistent_class
    class TinySynthesis(torch.nn.Module):
        def __init__(self, w_dim, img_resolution, img_channels):
            super().__init__()
            self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
            self.num_ws = 2
            self.const = torch.nn.Parameter(torch.randn([8, 4, 4]))
            self.affine = torch.nn.Parameter(torch.randn([8, w_dim]) / np.sqrt(w_dim))
            self.conv = torch.nn.Parameter(torch.randn([8, 8, 3, 3]) / np.sqrt(72))
            self.torgb = torch.nn.Parameter(torch.randn([img_channels, 8, 1, 1]) / np.sqrt(8))
            self.register_buffer('resample_filter', upfirdn2d.setup_filter([1, 3, 3, 1]))

        def forward(self, ws, noise_mode='const', force_fp32=True):
            misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            styles = ws[:, 0].matmul(self.affine.t())
            x = fma.fma(x, styles[:, :, None, None], x)
            while x.shape[2] < self.img_resolution:
                x = conv2d_resample.conv2d_resample(x, self.conv, f=self.resample_filter, up=2, padding=1)
                x = bias_act.bias_act(x, act='lrelu', clamp=256)
            return torch.tanh(conv2d_resample.conv2d_resample(x, self.torgb))


    @persistence.persistent_class
    class TinyGenerator(torch.nn.Module):
        def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, synthesis_kwargs={}):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
            self.img_resolution, self.img_channels = img_resolution, img_channels
            self.synthesis = TinySynthesis(w_dim, img_resolution, img_channels)
            self.num_ws = self.synthesis.num_ws
            self.mapping = TinyMapping(z_dim, c_dim, w_dim, self.num_ws)

        def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
            ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
            return self.synthesis(ws, **synthesis_kwargs)
''')


def build_official_layout_pickle(tmp_path):
    module_dir = tmp_path / 'foreign_code'
    module_dir.mkdir()
    (module_dir / 'foreign_networks.py').write_text(FOREIGN_NETWORK_SOURCE)
    sys.path.insert(0, str(module_dir))
    try:
        import foreign_networks
        torch.manual_seed(0)
        G = foreign_networks.TinyGenerator(z_dim=12, c_dim=0, w_dim=6, img_resolution=16, img_channels=3)
        data = dict(G=G, D=None, G_ema=G, augment_pipe=None,
                    training_set_kwargs=dnnlib.EasyDict(class_name='training.dataset.ImageFolderDataset',
                                                        path='~/datasets/ffhq.zip', use_labels=False,
                                                        max_size=70000, xflip=True, resolution=16),
                    progress=dnnlib.EasyDict(cur_nimg=np.int64(25000), augment_p=np.float64(0.12)))
        raw = pickle.dumps(data, protocol=2)
    finally:
        sys.path.remove(str(module_dir))
        sys.modules.pop('foreign_networks', None)
    # Protocol 2 names globals as 'module\nname\n': rename numpy 2's modules to numpy 1.x's.
    raw = raw.replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
    assert b'numpy.core.multiarray' in raw
    path = tmp_path / 'official-layout.pkl'
    path.write_bytes(raw)
    expected = {}
    for seed in (0, 1):
        z = torch.from_numpy(np.random.RandomState(seed).randn(1, 12)).float()
        img = G(z, torch.zeros([1, 0]))
        expected[seed] = (img * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).numpy()
    return path, expected


def test_official_layout_pickle_with_numpy1_names_loads(tmp_path):
    path, _ = build_official_layout_pickle(tmp_path)
    data = load_network_pkl(str(path))
    assert data['progress'].cur_nimg == 25000
    assert isinstance(data['training_set_kwargs'], dnnlib.EasyDict)
    assert data['G_ema'].img_resolution == 16


def test_numpy_module_names_map_to_the_installed_numpy():
    from training.snapshot import map_numpy_module
    numpy2 = int(np.__version__.split('.')[0]) >= 2
    core = 'numpy._core' if numpy2 else 'numpy.core'
    assert map_numpy_module('numpy.core.multiarray') == core + '.multiarray'
    assert map_numpy_module('numpy._core.multiarray') == core + '.multiarray'
    assert map_numpy_module('numpy.core') == core
    assert map_numpy_module('numpy.random._pickle') == 'numpy.random._pickle'
    assert map_numpy_module('numpy.corex') == 'numpy.corex'


def test_generate_renders_an_official_layout_pickle_with_the_official_seed_rule(tmp_path):
    path, expected = build_official_layout_pickle(tmp_path)
    out = tmp_path / 'out'
    subprocess.run([sys.executable, 'generate.py', f'--network={path}', '--seeds=0-1', f'--outdir={out}'],
                   check=True, cwd=REPO, capture_output=True)
    for seed in (0, 1):
        image = np.asarray(PIL.Image.open(out / f'seed{seed:04d}.png'))
        assert image.shape == (16, 16, 3)
        # Same z as StyleGAN2-ADA's generate.py (RandomState(seed).randn), same network: same image.
        assert np.abs(image.astype(int) - expected[seed].astype(int)).max() <= 1

"""style_mixing.py: rows give the base w, columns the styles of the chosen layers (StyleGAN2-ADA's tool)."""

import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import style_mixing
from networks.stylegan2 import Generator
from torch_utils import misc


def _snapshot(path, code=False):
    torch.manual_seed(0)
    data = {}
    if code:  # an ID-GAN-style generator: a code from a posterior bank plus nuisance, the code mapping
        from disentangle.latents import PosteriorBankLatent
        sampler = PosteriorBankLatent(code_dim=4, nuisance_dim=3, verbose=False)
        sampler.set_bank(torch.randn(50, 4), torch.randn(50, 4) - 3)
        mapping = dict(num_layers=1, class_name='disentangle.latents.CodeMappingNetwork', code_dim=4)
        z_dim = sampler.z_dim
        data['latent'] = sampler
    else:
        mapping, z_dim = dict(num_layers=1), 64
    G = Generator(z_dim=z_dim, c_dim=0, w_dim=64, img_resolution=16, img_channels=1, mapping_kwargs=mapping,
                  synthesis_kwargs=dict(channel_base=256, channel_max=16)).eval()
    with torch.no_grad():  # a trained-looking w_avg, so truncation would matter
        G.mapping.w_avg.normal_()
    data['G_ema'] = G
    misc.atomic_pickle_dump(data, path)
    return G


def _png(path):
    return np.asarray(PIL.Image.open(path))


@pytest.mark.parametrize('code', [False, True], ids=['mlp', 'code-mapping'])
def test_grid_and_the_two_extremes_of_mixing(tmp_path, code):
    G = _snapshot(tmp_path / 's.pkl', code=code)
    run = lambda styles, out: CliRunner().invoke(style_mixing.main, [  # noqa: E731
        f'--network={tmp_path / "s.pkl"}', '--rows=1,2,3', '--cols=7,8', f'--styles={styles}', f'--outdir={out}'])
    every = ','.join(str(i) for i in range(G.num_ws))
    for styles, out in ((every, tmp_path / 'all'), ('', tmp_path / 'none'), ('0-2', tmp_path / 'coarse')):
        result = run(styles, out)
        assert result.exit_code == 0, result.output
        assert sorted(os.listdir(out)) == sorted(['grid.png', '1-1.png', '2-2.png', '3-3.png', '7-7.png', '8-8.png'] +
                                                 [f'{r}-{c}.png' for r in (1, 2, 3) for c in (7, 8)])
        assert _png(out / 'grid.png').shape == (4 * 16, 3 * 16)
    for r in (1, 2, 3):
        for c in (7, 8):
            # Every layer from the column: the column's image; none: the row's image.
            assert np.array_equal(_png(tmp_path / 'all' / f'{r}-{c}.png'), _png(tmp_path / 'all' / f'{c}-{c}.png'))
            assert np.array_equal(_png(tmp_path / 'none' / f'{r}-{c}.png'), _png(tmp_path / 'none' / f'{r}-{r}.png'))
            mixed = _png(tmp_path / 'coarse' / f'{r}-{c}.png')
            assert not np.array_equal(mixed, _png(tmp_path / 'coarse' / f'{r}-{r}.png'))
            assert not np.array_equal(mixed, _png(tmp_path / 'coarse' / f'{c}-{c}.png'))
    grid = _png(tmp_path / 'coarse' / 'grid.png')
    assert np.array_equal(grid[16:32, 32:48], _png(tmp_path / 'coarse' / '1-8.png'))  # row 1, column 8
    assert np.array_equal(grid[:16, :16], np.zeros([16, 16], np.uint8))


def test_mixed_ws_takes_exactly_the_listed_layers():
    rows, cols = torch.randn(2, 5, 3), torch.randn(3, 5, 3)
    out = style_mixing.mixed_ws(rows, cols, [1, 3])
    assert out.shape == (2, 3, 5, 3)
    for r in range(2):
        for c in range(3):
            assert torch.equal(out[r, c, [1, 3]], cols[c, [1, 3]])
            assert torch.equal(out[r, c, [0, 2, 4]], rows[r, [0, 2, 4]])


@pytest.mark.parametrize('args, message', [
    (['--styles=99'], "--styles: layer 99 does not exist; this network has"),
    (['--styles=a-b'], 'is not a number or a range'),
    (['--rows=abc'], 'is not a number or a range'),
    (['--trunc=nan'], 'is not a finite number'),
    (['--class=1'], '--class applies to conditional networks'),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, args, message):
    _snapshot(tmp_path / 's.pkl')
    base = [f'--network={tmp_path / "s.pkl"}', '--rows=1', '--cols=2', f'--outdir={tmp_path / "out"}']
    result = CliRunner().invoke(style_mixing.main, base + args)
    assert result.exit_code != 0 and isinstance(result.exception, SystemExit)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / 'out').exists()

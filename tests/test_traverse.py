"""Traversals and real-image editing: disentangle/traverse.py and generate.py --traverse/--encode/--set."""

import os
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
from disentangle import traverse
from disentangle.latents import PosteriorBankLatent
from networks.stylegan2 import Generator
from networks.vae import Decoder, Encoder
from torch_utils import misc
from training.latent import GaussianLatent

RES = 16
CODE_DIM = 3
NUISANCE_DIM = 2




class _Squares:
    def __init__(self, count=30):
        rnd = np.random.RandomState(0)
        self.images = np.zeros([count, 1, RES, RES], dtype=np.uint8)
        for i, (y, x) in enumerate(rnd.randint(0, RES - 4, size=[count, 2])):
            self.images[i, 0, y:y + 4, x:x + 4] = 255
        self.resolution, self.num_channels = RES, 1

    def __len__(self):
        return len(self.images)

    def __getitem__(self, idx):
        return self.images[idx], np.zeros([0], dtype=np.float32)


def _generator(z_dim, code_dim=None):
    torch.manual_seed(0)
    mapping = dict(num_layers=1)
    if code_dim is not None:
        mapping.update(class_name='disentangle.latents.CodeMappingNetwork', code_dim=code_dim)
    return Generator(z_dim=z_dim, c_dim=0, w_dim=16, img_resolution=RES, img_channels=1, mapping_kwargs=mapping,
                     synthesis_kwargs=dict(channel_base=128, channel_max=8)).eval().requires_grad_(False)


@pytest.fixture(scope='module')
def idgan_parts():
    torch.manual_seed(0)
    E = Encoder(img_resolution=RES, img_channels=1, code_dim=CODE_DIM).eval().requires_grad_(False)
    sampler = PosteriorBankLatent(code_dim=CODE_DIM, nuisance_dim=NUISANCE_DIM, bank_size=30, verbose=False)
    sampler.prepare(_Squares(), encoder=E)
    return _generator(CODE_DIM + NUISANCE_DIM, CODE_DIM), sampler, E


@pytest.fixture(scope='module')
def snapshots(idgan_parts, tmp_path_factory):
    root = tmp_path_factory.mktemp('snaps')
    G, sampler, E = idgan_parts
    idgan = str(root / 'idgan.pkl')
    misc.atomic_pickle_dump(dict(G_ema=G, latent=sampler, E=E, Dec=_decoder()), idgan)
    plain = str(root / 'plain.pkl')
    misc.atomic_pickle_dump(dict(G_ema=_generator(12)), plain)
    return idgan, plain


def _decoder(res=RES):
    torch.manual_seed(1)
    return Decoder(img_resolution=res, img_channels=1, code_dim=CODE_DIM).eval().requires_grad_(False)


def test_traversal_files_and_grid_geometry(idgan_parts, tmp_path):
    G, sampler, _E = idgan_parts
    out = traverse.write_traversal(G, sampler, sampler.sample_seed(0), str(tmp_path), 'trav', dims=[0, 2], steps=5,
                                   mp4=False)
    assert [os.path.basename(p) for p in out.paths] == ['trav.png', 'trav.gif']
    with PIL.Image.open(out.paths[0]) as png:
        assert png.size == (traverse.LABEL_WIDTH + 5 * RES, 2 * RES) and png.mode == 'L'
        grid = np.asarray(png)[:, traverse.LABEL_WIDTH:]
    with PIL.Image.open(out.paths[1]) as gif:
        assert gif.n_frames == 2 * 5 - 2 and gif.size == (2 * RES, RES)     # there and back, dims side by side
    # The tiles are the rendered images in (dimension, step) order.
    tiles = out.images.reshape(2, 5, RES, RES)
    assert np.array_equal(grid[RES:2 * RES, 3 * RES:4 * RES], tiles[1, 3].numpy())


def test_traversal_sweeps_one_dimension_over_the_bank_quantiles(idgan_parts):
    G, sampler, _E = idgan_parts
    base = sampler.sample_seed(4)
    ranges = traverse.value_ranges(sampler, [1, 2])
    q = sampler.code_quantiles(traverse.DEFAULT_QUANTILES)
    torch.testing.assert_close(ranges, q[:, [1, 2]].T)
    z = traverse.traversal_latents(base.z, [1, 2], ranges, steps=4).reshape(2, 4, -1)
    torch.testing.assert_close(z[0, :, 1], torch.linspace(float(ranges[0, 0]), float(ranges[0, 1]), 4))
    torch.testing.assert_close(z[1, :, 2], torch.linspace(float(ranges[1, 0]), float(ranges[1, 1]), 4))
    # Everything else, nuisance included, stays at the seed's values.
    keep = torch.ones(2, 4, CODE_DIM + NUISANCE_DIM, dtype=torch.bool)
    keep[0, :, 1] = keep[1, :, 2] = False
    torch.testing.assert_close(z[keep], base.z.expand(2, 4, -1)[keep])
    images = traverse.render(G, z.reshape(8, -1))
    direct = (G(z[1, 3:4], torch.zeros(1, 0), noise_mode='const') * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    assert torch.equal(images[7:8], direct)


def test_plain_gaussian_latent_sweeps_z_over_normal_quantiles():
    sampler = GaussianLatent(z_dim=12)
    assert traverse.default_dims(sampler) == list(range(10))
    ranges = traverse.value_ranges(sampler, [0, 11])
    torch.testing.assert_close(ranges, torch.tensor([[-2.0537, 2.0537]] * 2), atol=1e-3, rtol=0)


def test_bad_dimensions_and_edits_are_clear_errors(idgan_parts):
    _G, sampler, _E = idgan_parts
    with pytest.raises(traverse.TraversalError, match='3 code dimensions'):
        traverse.check_dims(sampler, [0, 3])
    with pytest.raises(traverse.TraversalError, match='DIM=VALUE'):
        traverse.parse_edits(['3:1'])
    assert traverse.parse_edits(['1=0.5', '0=-2,2=1e-1']) == {1: 0.5, 0: -2.0, 2: 0.1}


def test_encoding_a_real_image_uses_the_posterior_mean_and_the_seed_nuisance(idgan_parts, tmp_path):
    _G, sampler, E = idgan_parts
    big = np.zeros([2 * RES, 3 * RES, 3], dtype=np.uint8)        # colour, larger, not square
    big[8:16, 20:28] = 255
    path = str(tmp_path / 'real.png')
    PIL.Image.fromarray(big, 'RGB').save(path)
    x = traverse.load_image_for_encoder(path, E)
    assert x.shape == (1, 1, RES, RES) and float(x.min()) == -1.0 and float(x.max()) == 1.0
    # Centre square crop (columns 8..40), then a 2x area reduction: the square lands at rows 4..8, cols 6..10.
    expected = -torch.ones(RES, RES)
    expected[4:8, 6:10] = 1
    torch.testing.assert_close(x[0, 0], expected)
    latent = traverse.encode_latent(E, sampler, x, seed=5)
    torch.testing.assert_close(latent.code, E(x)[0])
    torch.testing.assert_close(latent.nuisance, sampler.sample_seed(5).nuisance)
    edited = traverse.apply_edits(latent.z, sampler, {1: 2.5})
    assert float(edited[0, 1]) == 2.5 and torch.equal(edited[0, [0, 2, 3, 4]], latent.z[0, [0, 2, 3, 4]])


def _generate(args):
    return CliRunner().invoke(generate.main, args)


def test_generate_traverse_for_idgan_and_plain_pickles(snapshots, tmp_path):
    idgan, plain = snapshots
    result = _generate([f'--network={idgan}', '--traverse', '--seeds=0-1', '--steps=4', f'--outdir={tmp_path}/a'])
    assert result.exit_code == 0, result.output
    assert {'traverse-seed0000.png', 'traverse-seed0001.gif'} <= set(os.listdir(tmp_path / 'a'))
    with PIL.Image.open(tmp_path / 'a' / 'traverse-seed0001.png') as png:
        assert png.size == (traverse.LABEL_WIDTH + 4 * RES, CODE_DIM * RES)
    result = _generate([f'--network={plain}', '--traverse', '--dims=0,5,11', '--seeds=2', f'--outdir={tmp_path}/b'])
    assert result.exit_code == 0, result.output
    with PIL.Image.open(tmp_path / 'b' / 'traverse-seed0002.png') as png:
        assert png.size == (traverse.LABEL_WIDTH + 9 * RES, 3 * RES)
    result = _generate([f'--network={plain}', '--traverse', '--dims=12', '--seeds=2', f'--outdir={tmp_path}/c'])
    assert result.exit_code != 0 and 'dimension 12 does not exist' in result.output


def test_generate_encode_and_set(snapshots, tmp_path):
    idgan, plain = snapshots
    path = str(tmp_path / 'in.png')
    image = np.zeros([RES, RES], dtype=np.uint8)
    image[2:6, 9:13] = 255
    PIL.Image.fromarray(image, 'L').save(path)
    result = _generate([f'--network={idgan}', f'--encode={path}', '--set', '0=1.5', '--seeds=0-2',
                        f'--outdir={tmp_path}/e'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / 'e')) == ['encode-in-input.png', 'encode-in-seed0000.png',
                                                  'encode-in-seed0001.png', 'encode-in-seed0002.png']
    result = _generate([f'--network={plain}', f'--encode={path}', f'--outdir={tmp_path}/f'])
    assert result.exit_code != 0 and '--encode needs an ID-GAN snapshot' in result.output


def test_generate_works_without_the_plugin(snapshots, tmp_path, monkeypatch):
    idgan, plain = snapshots
    for name in [m for m in sys.modules if m == 'disentangle' or m.startswith('disentangle.')]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, 'disentangle', None)      # import disentangle now raises ImportError
    for pkl in (idgan, plain):
        result = _generate([f'--network={pkl}', '--seeds=0-1', f'--outdir={tmp_path}/g'])
        assert result.exit_code == 0, result.output
    result = _generate([f'--network={plain}', '--traverse', f'--outdir={tmp_path}/h'])
    assert result.exit_code != 0 and 'need the disentangle/ plug-in' in result.output


@pytest.mark.skipif(traverse.ffmpeg_available(), reason='imageio-ffmpeg is installed')
def test_no_mp4_without_ffmpeg(idgan_parts, tmp_path):
    G, sampler, _E = idgan_parts
    out = traverse.write_traversal(G, sampler, sampler.sample_seed(0), str(tmp_path), 't', dims=[0], steps=2)
    assert not any(p.endswith('.mp4') for p in out.paths)
    assert sorted(os.listdir(tmp_path)) == ['t.gif', 't.png']


def test_compare_vae_puts_the_decoder_above_the_generator_for_the_same_codes(snapshots, tmp_path):
    idgan, plain = snapshots
    result = _generate([f'--network={idgan}', '--compare-vae', '--seeds=3-5', f'--outdir={tmp_path}/v'])
    assert result.exit_code == 0, result.output
    assert 'compare-vae.png' in os.listdir(tmp_path / 'v')
    with PIL.Image.open(tmp_path / 'v' / 'compare-vae.png') as png:
        assert png.size == (traverse.LABEL_WIDTH + 3 * RES, 2 * RES)
        grid = np.asarray(png)[:, traverse.LABEL_WIDTH:]
    G, sampler, _E = _load(idgan)
    latent = sampler.sample_seed(4)
    # Row 0: the VAE decoder on the code only; row 1: G on code + nuisance.
    with torch.no_grad():
        vae = _decoder().to_image(_decoder()(latent.code))
    vae = (vae * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0, 0].numpy()
    assert np.array_equal(grid[:RES, RES:2 * RES], vae)
    assert np.array_equal(grid[RES:, RES:2 * RES], traverse.render(G, latent.z)[0, 0].numpy())
    result = _generate([f'--network={plain}', '--compare-vae', f'--outdir={tmp_path}/w'])
    assert result.exit_code != 0 and '--compare-vae needs an ID-GAN snapshot' in result.output


def test_compare_vae_with_traverse_writes_matching_vae_traversals(snapshots, tmp_path):
    idgan, _plain = snapshots
    result = _generate([f'--network={idgan}', '--compare-vae', '--traverse', '--dims=0,2', '--steps=3', '--seeds=1',
                        f'--outdir={tmp_path}'])
    assert result.exit_code == 0, result.output
    with PIL.Image.open(tmp_path / 'traverse-seed0001.png') as gan, \
            PIL.Image.open(tmp_path / 'traverse-seed0001-vae.png') as vae:
        assert gan.size == vae.size == (traverse.LABEL_WIDTH + 3 * RES, 2 * RES)
        rows = np.asarray(vae)[:, traverse.LABEL_WIDTH:].reshape(2, RES, 3, RES).transpose(0, 2, 1, 3)
    # Sweeping code dimension 0 changes the VAE's image (the decoder sees the swept code).
    assert not np.array_equal(rows[0, 0], rows[0, 2])


def test_vae_images_are_shown_at_the_generator_resolution_pixel_for_pixel():
    from disentangle import compare
    code = torch.randn(2, CODE_DIM)
    small = compare.decode(_decoder(), code)
    large = compare.decode(_decoder(), code, resolution=2 * RES)
    assert small.shape == (2, 1, RES, RES) and large.shape == (2, 1, 2 * RES, 2 * RES)
    assert torch.equal(large[:, :, ::2, ::2], small) and torch.equal(large[:, :, 1::2, 1::2], small)


def _load(pkl):
    from training.snapshot import load_generator
    G, sampler, _data = load_generator(pkl)
    return G, sampler, _data

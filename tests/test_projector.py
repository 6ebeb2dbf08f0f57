"""projector.py: W / W+ projection with the official schedule, offline and VGG16 distances, --projected-w."""

import math
import os

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

import generate
import projector
from test_style_mixing import _snapshot
from training import projection


def test_schedule_matches_the_official_projector():
    assert projection.learning_rate(0.0) == 0.0                       # linear ramp-up over 5 %
    assert projection.learning_rate(0.025) == pytest.approx(0.05)
    assert projection.learning_rate(0.5) == pytest.approx(0.1)
    assert projection.learning_rate(0.875) == pytest.approx(0.1 * (0.5 - 0.5 * math.cos(0.5 * math.pi)))
    assert projection.w_noise_scale(0.0, 2.0) == pytest.approx(0.1)   # 5 % of w's spread
    assert projection.w_noise_scale(0.375, 2.0) == pytest.approx(0.025)
    assert projection.w_noise_scale(0.8, 2.0) == 0.0


def test_noise_regularizer_punishes_correlated_noise_at_every_scale():
    torch.manual_seed(0)
    white = [torch.randn(1, 1, 32, 32)]
    smooth = [torch.nn.functional.interpolate(torch.randn(1, 1, 4, 4), size=(32, 32), mode='bilinear')]
    smooth[0] = (smooth[0] - smooth[0].mean()) / smooth[0].std()
    assert float(projection.noise_regularizer(white)) < 0.01
    assert float(projection.noise_regularizer(smooth)) > 1.0


def _target(tmp_path, G, seed=7):
    from training.latent import GaussianLatent
    z = GaussianLatent(z_dim=G.z_dim).sample_seed(seed).z
    with torch.no_grad():
        img = G(z, torch.zeros([1, 0]), noise_mode='const')[0]
    PIL.Image.fromarray(((img[0] * 127.5 + 128).clamp(0, 255)).to(torch.uint8).numpy(), 'L').save(tmp_path / 't.png')
    return tmp_path / 't.png'


def _psnr(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-12))


@pytest.mark.parametrize('w_plus', ['0', '1'], ids=['W', 'W+'])
def test_projection_reconstructs_a_generated_image_and_generate_renders_it(tmp_path, w_plus):
    G = _snapshot(tmp_path / 's.pkl')
    target = _target(tmp_path, G)
    result = CliRunner().invoke(projector.main, [f'--network={tmp_path / "s.pkl"}', f'--target={target}',
                                                 '--num-steps=150', '--save-video=0', f'--w-plus={w_plus}',
                                                 f'--outdir={tmp_path / "out"}'])
    assert result.exit_code == 0, result.output
    assert sorted(os.listdir(tmp_path / 'out')) == ['proj.png', 'projected_w.npz', 'target.png']
    w = np.load(tmp_path / 'out' / 'projected_w.npz')['w']
    assert w.shape == (1, G.num_ws, G.w_dim)
    if w_plus == '0':
        assert np.allclose(w[0], w[0, :1])  # W: one w repeated over the layers
    first, last = [float(x) for x in result.output.split('distance ')[1].split(' over')[0].split(' -> ')]
    assert last < 0.2 * first
    truth = PIL.Image.open(target)
    proj_image = PIL.Image.open(tmp_path / 'out' / 'proj.png')
    assert _psnr(proj_image, truth) > 18
    # generate.py --projected-w renders the saved w (with the snapshot's own constant noise).
    again = CliRunner().invoke(generate.main, [f'--network={tmp_path / "s.pkl"}',
                                               f'--projected-w={tmp_path / "out" / "projected_w.npz"}',
                                               f'--outdir={tmp_path / "gen"}'])
    assert again.exit_code == 0, again.output
    rendered = PIL.Image.open(tmp_path / 'gen' / 'proj00.png')
    with torch.no_grad():
        w_avg_img = G.synthesis(G.mapping.w_avg[None, None].repeat(1, G.num_ws, 1), noise_mode='const')[0, 0]
    w_avg_img = ((w_avg_img * 127.5 + 128).clamp(0, 255)).to(torch.uint8).numpy()
    assert _psnr(rendered, truth) > _psnr(w_avg_img, truth) + 3


def test_vgg16_distance_loads_from_a_local_stand_in_and_bad_urls_are_one_sentence(tmp_path):
    class StandIn(torch.nn.Module):  # the official network's call signature, a fixed random conv inside
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)

        def forward(self, x, resize_images: bool = False, return_lpips: bool = False):
            return torch.nn.functional.avg_pool2d(self.conv(x / 255), 2).flatten(1)

    torch.jit.script(StandIn()).save(str(tmp_path / 'vgg16.pt'))
    G = _snapshot(tmp_path / 's.pkl')
    target = _target(tmp_path, G)
    base = [f'--network={tmp_path / "s.pkl"}', f'--target={target}', '--num-steps=60', '--save-video=0',
            '--distance=vgg16']
    result = CliRunner().invoke(projector.main, base + [f'--vgg16-url={tmp_path / "vgg16.pt"}',
                                                        f'--outdir={tmp_path / "out"}'])
    assert result.exit_code == 0, result.output
    first, last = [float(x) for x in result.output.split('distance ')[1].split(' over')[0].split(' -> ')]
    assert last < first
    bad = CliRunner().invoke(projector.main, base + [f'--vgg16-url={tmp_path / "missing.pt"}',
                                                     f'--outdir={tmp_path / "out2"}'])
    assert bad.exit_code == 1 and bad.stderr.count('\n') == 1 and 'cannot load' in bad.stderr
    assert not (tmp_path / 'out2').exists()


@pytest.mark.parametrize('make, message', [
    (lambda t: t / 'missing.png', 'does not exist'),
    (lambda t: (t / 'x.png').write_text('not an image') and t / 'x.png', 'is not an image Pillow can read'),
])
def test_bad_targets_are_one_sentence(tmp_path, make, message):
    _snapshot(tmp_path / 's.pkl')
    result = CliRunner().invoke(projector.main, [f'--network={tmp_path / "s.pkl"}', f'--target={make(tmp_path)}',
                                                 f'--outdir={tmp_path / "out"}'])
    assert result.exit_code == 1 and message in result.stderr and result.stderr.count('\n') == 1
    assert not (tmp_path / 'out').exists()


def test_a_target_of_another_size_is_resized_with_a_note(tmp_path):
    G = _snapshot(tmp_path / 's.pkl')
    PIL.Image.new('RGB', (40, 30), (200, 10, 10)).save(tmp_path / 'big.png')
    img = projector.load_target(tmp_path / 'big.png', G)
    assert img.shape == (1, 16, 16) and float(img.min()) >= -1 and float(img.max()) <= 1

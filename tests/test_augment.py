"""Specification of training/augment.py: the ADA augmentation pipeline and the adaptive p heuristic."""

import math
import pickle
from statistics import NormalDist

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training.augment import (
    AUGPIPE_SPECS,
    DEFAULT_AUGPIPE,
    AdaptiveP,
    AugmentPipe,
    AugmentPipeError,
    cdf97_lowpass_pair,
    octave_band_filters,
)


def make_pipe(p=1.0, **kwargs):
    pipe = AugmentPipe(**kwargs)
    pipe.p.fill_(p)
    return pipe


def run(pipe, images, seed=0, **kwargs):
    torch.manual_seed(seed)
    return pipe(images, **kwargs)


def random_images(batch, channels=3, height=16, width=16, seed=1):
    return torch.randn([batch, channels, height, width], generator=torch.Generator().manual_seed(seed))


def gaussian_blob(size=32, sigma=3.0, centre=(0.0, 0.0)):
    coords = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    ys, xs = torch.meshgrid(coords, coords, indexing='ij')
    blob = torch.exp(-((xs - centre[0]) ** 2 + (ys - centre[1]) ** 2) / (2 * sigma ** 2))
    return blob.reshape(1, 1, size, size)


def blob_moments(image):
    """Centroid (x, y) relative to the image centre and radial std of a positive blob."""
    image = image[0, 0].clamp(min=0)
    size = image.shape[-1]
    coords = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    ys, xs = torch.meshgrid(coords, coords, indexing='ij')
    weights = image.double() / image.double().sum()
    cx, cy = (weights * xs).sum().item(), (weights * ys).sum().item()
    spread_x = math.sqrt((weights * (xs - cx) ** 2).sum().item())
    spread_y = math.sqrt((weights * (ys - cy) ** 2).sum().item())
    return cx, cy, spread_x, spread_y


def normal_quantile(q):
    return NormalDist().inv_cdf(q)


def luma(images):
    return images.mean(dim=1, keepdim=True)


# ---------------------------------------------------------------------------------------------
# Presets and filters.

def test_presets_have_the_official_contents():
    blit = {'xflip', 'rotate90', 'xint'}
    geom = {'scale', 'rotate', 'aniso', 'xfrac'}
    color = {'brightness', 'contrast', 'lumaflip', 'hue', 'saturation'}
    expected = {
        'blit': blit, 'geom': geom, 'color': color, 'filter': {'imgfilter'}, 'noise': {'noise'},
        'cutout': {'cutout'}, 'bg': blit | geom, 'bgc': blit | geom | color,
        'bgcf': blit | geom | color | {'imgfilter'}, 'bgcfn': blit | geom | color | {'imgfilter', 'noise'},
        'bgcfnc': blit | geom | color | {'imgfilter', 'noise', 'cutout'},
    }
    assert {name: set(spec) for name, spec in AUGPIPE_SPECS.items()} == expected
    assert all(value == 1 for spec in AUGPIPE_SPECS.values() for value in spec.values())
    assert DEFAULT_AUGPIPE == 'bgc'


def test_cdf97_pair_is_symmetric_and_reconstructs_perfectly():
    synthesis, analysis = cdf97_lowpass_pair()
    assert len(synthesis) == 7 and len(analysis) == 9
    np.testing.assert_allclose(synthesis, synthesis[::-1], atol=1e-15)
    np.testing.assert_allclose(analysis, analysis[::-1], atol=1e-15)
    assert synthesis.sum() == pytest.approx(1) and analysis.sum() == pytest.approx(1)
    # Published JPEG 2000 values (centre taps, normalised to unit DC gain).
    assert synthesis[3] == pytest.approx(0.557543526229, abs=1e-11)
    assert analysis[4] == pytest.approx(0.602949018236, abs=1e-11)
    # Up-sample (gain 2) then down-sample: the even taps of the product are a unit impulse.
    product = 2 * np.convolve(synthesis, analysis)
    centre = len(product) // 2
    np.testing.assert_allclose(product[centre % 2::2], np.eye(1, len(product[centre % 2::2]), centre // 2)[0],
                               atol=1e-12)


def test_octave_bands_sum_to_identity_and_split_the_spectrum():
    bank = octave_band_filters()
    assert bank.shape == (4, 43)
    impulse = np.zeros(43)
    impulse[21] = 1
    np.testing.assert_allclose(bank.sum(axis=0), impulse, atol=1e-12)
    np.testing.assert_allclose(bank, bank[:, ::-1], atol=1e-15)
    frequencies = np.linspace(0, np.pi, 257)
    response = np.abs(bank @ np.exp(-1j * np.outer(np.arange(43) - 21, frequencies)))
    # Each band peaks inside its own octave: (0, pi/8), (pi/8, pi/4), (pi/4, pi/2), (pi/2, pi).
    peaks = frequencies[response.argmax(axis=1)]
    edges = [0, np.pi / 8, np.pi / 4, np.pi / 2, np.pi]
    for band, peak in enumerate(peaks):
        assert edges[band] <= peak <= edges[band + 1] + 1e-9, (band, peak)


# ---------------------------------------------------------------------------------------------
# Identity and probabilities.

@pytest.mark.parametrize('preset', sorted(AUGPIPE_SPECS))
def test_p_zero_leaves_images_exactly_unchanged(preset):
    images = random_images(5)
    out = run(make_pipe(0.0, **AUGPIPE_SPECS[preset]), images)
    assert torch.equal(out, images)


def test_each_transform_fires_with_probability_multiplier_times_p():
    images = random_images(2000, channels=3, height=2, width=2)
    for multiplier, p in ((1.0, 0.3), (0.5, 0.6)):
        out = run(make_pipe(p, brightness=multiplier), images)
        changed = (out != images).flatten(1).any(dim=1).double().mean().item()
        assert changed == pytest.approx(multiplier * p, abs=0.04)


def test_pre_and_post_rotation_together_fire_with_probability_rotate_times_p():
    images = random_images(600, channels=1, height=8, width=8)
    out = run(make_pipe(0.5, rotate=1), images)
    changed = (out != images).flatten(1).any(dim=1).double().mean().item()
    assert changed == pytest.approx(0.5, abs=0.07)


# ---------------------------------------------------------------------------------------------
# Pixel blitting: exact.

def test_xflip_gives_the_image_or_its_exact_mirror():
    images = random_images(16)
    out = run(make_pipe(1.0, xflip=1), images)
    identical = [torch.equal(o, i) for o, i in zip(out, images)]
    mirrored = [torch.equal(o, i.flip(-1)) for o, i in zip(out, images)]
    assert all(a or b for a, b in zip(identical, mirrored))
    assert any(identical) and any(mirrored)


def test_rotate90_gives_one_of_the_four_exact_rotations():
    images = random_images(32)
    out = run(make_pipe(1.0, rotate90=1), images)
    seen = set()
    for o, i in zip(out, images):
        matches = [k for k in range(4) if torch.equal(o, torch.rot90(i, k, dims=(1, 2)))]
        assert len(matches) == 1
        seen.add(matches[0])
    assert seen == {0, 1, 2, 3}


def test_integer_translation_is_an_exact_reflect_padded_shift():
    images = random_images(12, height=16, width=16)
    out = run(make_pipe(1.0, xint=1, xint_max=0.25), images)
    limit = 4  # 0.25 * 16
    padded = torch.nn.functional.pad(images, [limit] * 4, mode='reflect')
    shifts = []
    for n in range(len(images)):
        for dy in range(-limit, limit + 1):
            for dx in range(-limit, limit + 1):
                window = padded[n, :, limit - dy:limit - dy + 16, limit - dx:limit - dx + 16]
                if torch.equal(out[n], window):
                    shifts.append((dx, dy))
        assert len(shifts) == n + 1, f'image {n} is not a reflect-padded integer shift'
    assert len({shift for shift in shifts if shift != (0, 0)}) >= 4


def test_debug_percentile_integer_shift_moves_content_right_and_down():
    images = random_images(2, height=32, width=32)
    out = make_pipe(1.0, xint=1)(images, debug_percentile=0.625)  # (2q - 1) * 0.125 * 32 = 1 px
    assert torch.equal(out[:, :, 1:, 1:], images[:, :, :-1, :-1])


@pytest.mark.parametrize('height, width', [(8, 12), (8, 11)])
def test_rotate90_on_non_square_images_keeps_the_shape(height, width):
    images = random_images(6, height=height, width=width)
    out = run(make_pipe(1.0, rotate90=1), images)
    assert out.shape == images.shape and torch.isfinite(out).all()


# ---------------------------------------------------------------------------------------------
# General geometry: resampled.

def test_resampling_reconstructs_transforms_that_land_on_the_pixel_grid():
    images = random_images(3, height=24, width=24)
    nearly_identity = make_pipe(1.0, xfrac=1, xfrac_std=1e-7)(images, debug_percentile=0.9)
    assert not torch.equal(nearly_identity, images)  # it went through the resampler ...
    assert (nearly_identity - images).abs().max() < 1e-4  # ... which reconstructs white noise
    quarter_turn_resampled = make_pipe(1.0, rotate=1)(images, debug_percentile=0.75)  # theta = pi/2
    quarter_turn_blitted = make_pipe(1.0, rotate90=1)(images, debug_percentile=0.3)  # k = 1
    assert (quarter_turn_resampled - quarter_turn_blitted).abs().max() < 1e-4


def test_rotation_turns_content_about_the_image_centre():
    # Small blob, large image: the reflected copies that fill the rotated corners stay negligible.
    image = gaussian_blob(size=48, sigma=2.0, centre=(6.0, 0.0))
    out = make_pipe(1.0, rotate=1)(image, debug_percentile=0.6)  # theta = 0.2 pi
    theta = 0.2 * math.pi
    cx, cy, spread_x, spread_y = blob_moments(out)
    assert cx == pytest.approx(6 * math.cos(theta), abs=0.01)
    assert cy == pytest.approx(6 * math.sin(theta), abs=0.01)
    assert spread_x == pytest.approx(2.0, abs=0.02) and spread_y == pytest.approx(2.0, abs=0.02)


@pytest.mark.parametrize('quantile', [0.1, 0.9])
def test_isotropic_scale_resizes_content_by_the_drawn_factor(quantile):
    factor = 2 ** (normal_quantile(quantile) * 0.2)
    out = make_pipe(1.0, scale=1)(gaussian_blob(), debug_percentile=quantile)
    cx, cy, spread_x, spread_y = blob_moments(out)
    assert abs(cx) < 1e-3 and abs(cy) < 1e-3
    assert spread_x == pytest.approx(3.0 * factor, rel=0.01)
    assert spread_y == pytest.approx(3.0 * factor, rel=0.01)


def test_anisotropic_scale_stretches_x_and_squeezes_y():
    factor = 2 ** (normal_quantile(0.9) * 0.2)
    out = make_pipe(1.0, aniso=1)(gaussian_blob(), debug_percentile=0.9)
    _, _, spread_x, spread_y = blob_moments(out)
    assert spread_x == pytest.approx(3.0 * factor, rel=0.01)
    assert spread_y == pytest.approx(3.0 / factor, rel=0.01)


def test_fractional_translation_moves_content_by_the_drawn_subpixel_offset():
    shift = normal_quantile(0.7) * 0.125 * 32  # ~2.1 px on both axes
    out = make_pipe(1.0, xfrac=1)(gaussian_blob(), debug_percentile=0.7)
    cx, cy, _, _ = blob_moments(out)
    assert cx == pytest.approx(shift, abs=0.01) and cy == pytest.approx(shift, abs=0.01)


# ---------------------------------------------------------------------------------------------
# Colour.

def test_brightness_adds_the_drawn_offset_to_every_pixel():
    images = random_images(4)
    for quantile in (0.2, 0.8):
        offset = normal_quantile(quantile) * 0.2
        out = make_pipe(1.0, brightness=1)(images, debug_percentile=quantile)
        torch.testing.assert_close(out, images + offset, atol=1e-5, rtol=0)
    many = random_images(400, height=2, width=2)
    offsets = (run(make_pipe(1.0, brightness=1), many) - many).flatten(1)
    assert torch.allclose(offsets, offsets[:, :1].expand_as(offsets), atol=1e-5)
    assert offsets[:, 0].std().item() == pytest.approx(0.2, rel=0.15)


def test_contrast_scales_about_zero_by_a_log_normal_factor():
    images = random_images(4)
    factor = 2 ** (normal_quantile(0.85) * 0.5)
    out = make_pipe(1.0, contrast=1)(images, debug_percentile=0.85)
    torch.testing.assert_close(out, images * factor, atol=1e-5, rtol=1e-5)
    many = random_images(400, height=2, width=2)
    ratios = (run(make_pipe(1.0, contrast=1), many) / many).flatten(1)
    assert torch.allclose(ratios, ratios[:, :1].expand_as(ratios), rtol=1e-4)
    assert torch.log2(ratios[:, 0]).std().item() == pytest.approx(0.5, rel=0.15)


def test_luma_flip_negates_luma_and_keeps_chroma():
    images = random_images(24)
    out = run(make_pipe(1.0, lumaflip=1), images)
    flipped = [not torch.equal(o, i) for o, i in zip(out, images)]
    assert any(flipped) and not all(flipped)
    for o, i, was_flipped in zip(out, images, flipped):
        if was_flipped:
            torch.testing.assert_close(luma(o[None]), -luma(i[None]), atol=1e-5, rtol=0)
            torch.testing.assert_close(o - luma(o[None])[0], i - luma(i[None])[0], atol=1e-5, rtol=0)


def test_hue_rotation_preserves_luma_and_chroma_magnitude_and_changes_colour():
    images = random_images(8)
    out = run(make_pipe(1.0, hue=1), images)
    torch.testing.assert_close(luma(out), luma(images), atol=1e-5, rtol=0)
    chroma_norm = lambda x: (x - luma(x)).norm(dim=1)
    torch.testing.assert_close(chroma_norm(out), chroma_norm(images), atol=1e-4, rtol=1e-4)
    assert (out - images).abs().max() > 0.1


def test_saturation_scales_chroma_and_keeps_luma():
    images = random_images(4)
    factor = 2 ** normal_quantile(0.85)
    out = make_pipe(1.0, saturation=1)(images, debug_percentile=0.85)
    torch.testing.assert_close(luma(out), luma(images), atol=1e-5, rtol=0)
    torch.testing.assert_close(out - luma(out), (images - luma(images)) * factor, atol=1e-5, rtol=1e-5)


def test_hue_and_saturation_leave_grey_images_grey_and_unchanged():
    grey = random_images(6, channels=1).expand(6, 3, 16, 16).contiguous()
    out = run(make_pipe(1.0, hue=1, saturation=1), grey)
    torch.testing.assert_close(out, grey, atol=1e-5, rtol=0)
    full_colour = run(make_pipe(1.0, **AUGPIPE_SPECS['color']), grey)
    assert torch.allclose(full_colour, full_colour[:, :1].expand_as(full_colour), atol=1e-5)


def test_single_channel_images_get_the_luma_subset_of_colour():
    images = random_images(3, channels=1)
    offset = normal_quantile(0.8) * 0.2
    torch.testing.assert_close(make_pipe(1.0, brightness=1)(images, debug_percentile=0.8),
                               images + offset, atol=1e-5, rtol=0)
    factor = 2 ** (normal_quantile(0.8) * 0.5)
    torch.testing.assert_close(make_pipe(1.0, contrast=1)(images, debug_percentile=0.8),
                               images * factor, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(make_pipe(1.0, lumaflip=1)(images, debug_percentile=0.75),
                               -images, atol=1e-6, rtol=0)
    assert torch.equal(make_pipe(1.0, hue=1, saturation=1)(images, debug_percentile=0.9), images)


def test_colour_needs_one_or_three_channels():
    two_channels = random_images(2, channels=2)
    with pytest.raises(AugmentPipeError, match='1 \\(grey\\) or 3 \\(RGB\\) channels'):
        make_pipe(1.0, **AUGPIPE_SPECS['bgc'])(two_channels)
    assert run(make_pipe(1.0, **AUGPIPE_SPECS['bg']), two_channels).shape == two_channels.shape


def test_non_image_input_is_a_clear_error():
    with pytest.raises(AugmentPipeError, match='4-D image batch'):
        make_pipe(1.0, xflip=1)(torch.zeros(3, 16, 16))


# ---------------------------------------------------------------------------------------------
# Image-space filtering and corruptions.

def test_filtering_with_unit_band_gains_is_the_identity():
    images = random_images(3, height=12, width=12)  # smaller than the 43-tap filter: repeated reflection
    out = run(make_pipe(1.0, imgfilter=1, imgfilter_std=1e-6), images)
    assert not torch.equal(out, images)
    assert (out - images).abs().max() < 1e-4


def test_amplifying_the_top_band_sharpens_and_keeps_expected_power():
    images = random_images(4, height=32, width=32)
    out = make_pipe(1.0, imgfilter=1, imgfilter_bands=[0, 0, 0, 1])(images, debug_percentile=0.9772)

    def high_frequency_energy(x):
        return (x[..., 1:] - x[..., :-1]).square().mean().item()

    assert high_frequency_energy(out) > 2.5 * high_frequency_energy(images)
    smooth = gaussian_blob(sigma=4.0)
    smooth_out = make_pipe(1.0, imgfilter=1, imgfilter_bands=[0, 0, 0, 1])(smooth, debug_percentile=0.9772)
    # Gain 4 on the top band, renormalised by sqrt(10/13 + 1/13 + 1/13 + 16/13) = sqrt(28/13); the
    # 1-D filter runs along x and along y, so smooth 2-D content is scaled by 13/28.
    torch.testing.assert_close(smooth_out, smooth * 13 / 28, atol=1e-2, rtol=0)
    assert smooth_out.sum().item() == pytest.approx(smooth.sum().item() * 13 / 28, rel=2e-3)


def test_imgfilter_bands_must_have_four_entries():
    with pytest.raises(AugmentPipeError, match='imgfilter_bands needs 4'):
        AugmentPipe(imgfilter=1, imgfilter_bands=[1, 1, 1])


def test_noise_adds_gaussian_noise_with_the_drawn_std():
    images = torch.zeros(2, 3, 64, 64)
    sigma = normal_quantile(0.75) * 0.1  # half-normal median
    torch.manual_seed(0)
    out = make_pipe(1.0, noise=1)(images, debug_percentile=0.5)
    assert out.std().item() == pytest.approx(sigma, rel=0.03)
    assert out.mean().abs().item() < 0.003


def test_cutout_zeroes_a_centred_square_of_the_given_size():
    images = random_images(2, height=32, width=32) + 10  # no accidental zeros
    out = make_pipe(1.0, cutout=1, cutout_size=0.5)(images, debug_percentile=0.5)
    inside = torch.zeros(32, 32, dtype=torch.bool)
    inside[8:24, 8:24] = True
    assert (out[:, :, inside] == 0).all()
    assert torch.equal(out[:, :, ~inside], images[:, :, ~inside])


# ---------------------------------------------------------------------------------------------
# Geometry execution: sub-batches (the CPU default) and masked whole-batch paths (other devices).

def run_both_executions(spec, p, images, seed=0, **kwargs):
    pipes = [make_pipe(p, geometry_execution=mode, **spec) for mode in ('sub_batch', 'masked')]
    return [run(pipe, images, seed=seed, **kwargs) for pipe in pipes]


@pytest.mark.parametrize('p', [0.0, 0.3, 1.0])
@pytest.mark.parametrize('preset', sorted(AUGPIPE_SPECS))
def test_masked_and_sub_batch_execution_give_the_same_images(preset, p):
    images = random_images(12, height=16, width=16)
    sub_batch, masked = run_both_executions(AUGPIPE_SPECS[preset], p, images)
    if p == 0:
        assert torch.equal(masked, images) and torch.equal(sub_batch, images)
    # Blitting copies pixels in both modes; resampling a whole batch may round differently.
    geometry = set(AUGPIPE_SPECS[preset]) & {'scale', 'rotate', 'aniso', 'xfrac'}
    if not geometry:
        assert torch.equal(masked, sub_batch)
    assert (masked - sub_batch).abs().max() <= 1e-5


@pytest.mark.parametrize('height, width', [(8, 12), (8, 11)])
def test_masked_and_sub_batch_execution_agree_on_quarter_turns_of_non_square_images(height, width):
    # An odd width - height cannot be blitted by a quarter turn: those images are resampled.
    images = random_images(10, height=height, width=width)
    sub_batch, masked = run_both_executions(AUGPIPE_SPECS['blit'], 0.5, images)
    if (width - height) % 2 == 0:
        assert torch.equal(masked, sub_batch)
    assert (masked - sub_batch).abs().max() <= 1e-5
    assert not torch.equal(masked, images)


@pytest.mark.parametrize('quantile', [0.0, 0.3, 0.5, 0.75, 1.0])
def test_masked_and_sub_batch_execution_agree_on_debug_percentiles(quantile):
    images = random_images(3, channels=1, height=16, width=16)
    sub_batch, masked = run_both_executions(AUGPIPE_SPECS['bgcfnc'], 1.0, images, debug_percentile=quantile)
    assert (masked - sub_batch).abs().max() <= 1e-5


def test_masked_and_sub_batch_execution_have_the_same_gradient():
    images = random_images(6, height=16, width=16)
    weights = random_images(6, height=16, width=16, seed=2)
    grads = []
    for mode in ('sub_batch', 'masked'):
        x = images.clone().requires_grad_(True)
        (run(make_pipe(0.5, geometry_execution=mode, **AUGPIPE_SPECS['bgc']), x, seed=3) * weights).sum().backward()
        grads.append(x.grad)
    assert grads[0].abs().sum() > 0
    assert (grads[0] - grads[1]).abs().max() <= 1e-5


def test_geometry_execution_defaults_to_sub_batches_on_the_cpu():
    images = random_images(8, height=16, width=16)
    default = run(make_pipe(0.5, **AUGPIPE_SPECS['bg']), images)
    assert torch.equal(default, run(make_pipe(0.5, geometry_execution='sub_batch', **AUGPIPE_SPECS['bg']), images))


def test_geometry_execution_is_validated():
    with pytest.raises(AugmentPipeError, match='geometry_execution'):
        AugmentPipe(geometry_execution='gpu')


# ---------------------------------------------------------------------------------------------
# Differentiability, dtypes, batches, persistence.

def test_gradient_is_the_adjoint_of_the_augmentation():
    images = random_images(4, height=16, width=16)
    weights = random_images(4, height=16, width=16, seed=2)
    pipe = make_pipe(1.0, **AUGPIPE_SPECS['bgcf'])
    x = images.clone().requires_grad_(True)
    (run(pipe, x, seed=3) * weights).sum().backward()
    # The pipeline is affine per draw: L x = aug(x) - aug(0) with the same random draws.
    linear_part = run(pipe, images, seed=3) - run(pipe, torch.zeros_like(images), seed=3)
    assert (linear_part * weights).sum().item() == pytest.approx((images * x.grad).sum().item(), rel=1e-4)
    assert x.grad.abs().sum() > 0


def test_double_backward_gives_the_gradient_of_an_r1_penalty():
    images = random_images(3, height=16, width=16)
    weights = random_images(3, height=16, width=16, seed=2)
    pipe = make_pipe(1.0, **AUGPIPE_SPECS['bgc'])

    def r1_penalty(x, create_graph):
        x = x.clone().requires_grad_(True)
        score = (weights * run(pipe, x, seed=5).square()).sum()
        (grad,) = torch.autograd.grad(score, x, create_graph=create_graph)
        return x, grad.square().sum()

    x, penalty = r1_penalty(images, create_graph=True)
    penalty.backward()
    direction = random_images(3, height=16, width=16, seed=4)
    step = 1e-2
    _, ahead = r1_penalty(images + step * direction, create_graph=False)
    _, behind = r1_penalty(images - step * direction, create_graph=False)
    finite_difference = (ahead - behind).item() / (2 * step)
    assert (x.grad * direction).sum().item() == pytest.approx(finite_difference, rel=1e-2)


@pytest.mark.parametrize('channels', [1, 3])
@pytest.mark.parametrize('batch', [1, 3, 5])
@pytest.mark.parametrize('dtype', [torch.float32, torch.bfloat16])
def test_any_batch_size_channel_count_and_dtype(channels, batch, dtype):
    images = random_images(batch, channels=channels).to(dtype)
    out = run(make_pipe(1.0, **AUGPIPE_SPECS['bgcfnc']), images)
    assert out.shape == images.shape and out.dtype == dtype and torch.isfinite(out.float()).all()


def test_empty_batch_passes_through():
    images = torch.zeros(0, 3, 8, 8)
    assert make_pipe(1.0, **AUGPIPE_SPECS['bgc'])(images).shape == (0, 3, 8, 8)


def test_autocast_does_not_lower_the_geometry_precision():
    images = random_images(4)
    pipe = make_pipe(1.0, **AUGPIPE_SPECS['bgc'])
    reference = run(pipe, images)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        under_autocast = run(pipe, images)
    assert under_autocast.dtype == torch.float32
    assert torch.equal(under_autocast, reference)


def test_pipe_pickles_with_p_and_options_and_only_p_is_state():
    pipe = make_pipe(0.3, **AUGPIPE_SPECS['bgc'])
    assert list(pipe.state_dict()) == ['p']
    assert persistence.is_persistent(pipe)
    data = pickle.dumps(pipe)
    assert b'def cdf97_lowpass_pair' in data  # the module source travels with the snapshot
    clone = pickle.loads(data)
    assert clone.p.item() == pytest.approx(0.3)
    assert clone.rotate == 1 and clone.scale_std == 0.2
    images = random_images(4)
    assert torch.equal(run(clone, images), run(pipe, images))


# ---------------------------------------------------------------------------------------------
# The adaptive p heuristic.

def drive(adaptive, pipe, logits, steps, batch_size=64):
    history = []
    for _ in range(steps):
        adaptive.accumulate(logits)
        adaptive.update(pipe, batch_size)
        history.append(float(pipe.p))
    return history


def test_confident_discriminator_raises_p_by_one_step_per_interval():
    pipe = make_pipe(0.0, **AUGPIPE_SPECS['bgc'])
    adaptive = AdaptiveP(target=0.6, interval=4, kimg=500)
    history = drive(adaptive, pipe, torch.tensor([2.0, 1.0, 0.5, 3.0]), steps=8)
    step = 64 * 4 / (500 * 1000)
    assert adaptive.step_size(64) == step
    assert history[:3] == [0.0, 0.0, 0.0]
    assert history[3] == pytest.approx(step, rel=1e-6)  # p is a float32 buffer
    assert history[7] == pytest.approx(2 * step, rel=1e-6)
    assert pipe.p.item() == pytest.approx(2 * step, rel=1e-6)


def test_unsure_discriminator_lowers_p_and_clamps_at_zero():
    step = 64 * 4 / (500 * 1000)
    pipe = make_pipe(0.01)
    adaptive = AdaptiveP()
    drive(adaptive, pipe, torch.tensor([-1.0, 1.0, -2.0]), steps=4)
    assert pipe.p.item() == pytest.approx(0.01 - step, rel=1e-6)
    pipe.p.fill_(0.0002)
    history = drive(adaptive, pipe, torch.tensor([-1.0, -1.0]), steps=4)
    assert history[-1] == 0.0 and pipe.p.item() == 0.0


def test_signs_exactly_at_target_leave_p_alone():
    pipe = make_pipe(0.25)
    logits = torch.tensor([1.0] * 8 + [-1.0] * 2)  # mean sign 0.6
    history = drive(AdaptiveP(target=0.6), pipe, logits, steps=4)
    assert history[-1] == pytest.approx(0.25) and pipe.p.item() == pytest.approx(0.25)


def test_adaptive_state_round_trips_mid_interval():
    pipe_a, pipe_b = make_pipe(0.1), make_pipe(0.1)
    original = AdaptiveP(target=0.5, interval=4, kimg=100)
    drive(original, pipe_a, torch.tensor([1.0, 1.0, -1.0]), steps=6)  # 2 steps into an interval
    pipe_b.p.copy_(pipe_a.p)
    restored = AdaptiveP()
    restored.load_state_dict(original.state_dict())
    assert restored.state_dict() == original.state_dict()
    logits = torch.tensor([1.0, 1.0, 1.0, -1.0])
    assert drive(original, pipe_a, logits, steps=6) == drive(restored, pipe_b, logits, steps=6)
    assert pipe_a.p.item() == pipe_b.p.item()


def test_adaptive_options_are_validated():
    with pytest.raises(ValueError, match='target must lie in'):
        AdaptiveP(target=1.5)
    with pytest.raises(ValueError, match='interval >= 1'):
        AdaptiveP(interval=0)
    with pytest.raises(ValueError, match='missing'):
        AdaptiveP().load_state_dict({'target': 0.6})

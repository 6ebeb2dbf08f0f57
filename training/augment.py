"""Adaptive discriminator augmentation (ADA): the augmentation pipeline and its p heuristic.

Semantics follow Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"
(docs/TRAINING.md); the code is our own. Every image the discriminator sees, real or fake, goes
through `AugmentPipe`. Each transform fires per image with probability `multiplier * p`; the
buffer `p` is steered by `AdaptiveP` so that D's sign on reals stays near a target.

Stages, in order:
1. Geometry. xflip, rot90, integer translation, isotropic scale, rotation (split into a pre- and a
   post-rotation around anisotropic scaling, each with probability 1 - sqrt(1 - rotate*p) so that
   "at least one" has probability rotate*p), anisotropic scale, fractional translation. All of
   them compose into one 3x3 homogeneous matrix per image that maps output pixels to input
   pixels (pixel units, origin at the image centre). It is executed once:
   - images whose matrix is the identity are passed through untouched (bit-exact);
   - images whose matrix only flips, rotates by multiples of 90 degrees and shifts by whole
     pixels are *blitted*: every output pixel copies one input pixel (indices reflected at the
     border), so values are preserved exactly;
   - all others are resampled: reflect padding, 2x up-sampling, bilinear sampling on the 2x
     grid, low-pass filtering and 2x down-sampling (the supersampling scheme of ADA, which
     keeps bilinear blur small and removes content above the output's Nyquist limit before it
     aliases). Outside the image, content is the image reflected at its border pixels, at
     any distance (sample positions are mirrored; no padded copy is built).
   Our choice of filters: ADA up-samples with the orthogonal Symlet-6 filter h and
   down-samples with reversed h. That pair reconstructs perfectly only while the transform
   keeps orientation: h is not symmetric, so for a mirrored or quarter-turned image the two
   phase shifts add up instead of cancelling and the content moves by a fraction of a pixel.
   We use the biorthogonal CDF 9/7 pair instead (up-sample with its 7-tap synthesis low-pass,
   down-sample with its 9-tap analysis low-pass): both filters are symmetric, so every
   orientation is treated alike, and together they still reconstruct perfectly, so a transform
   that lands on the pixel grid returns the pixels to float rounding. Relative RMS error
   against band-limited ground truth (32x32 images of random sinusoids up to 0.35 cycles/px,
   5 seeds; ADA's pair re-implemented for the comparison):
       transform       mirror  rot90  rot10  rot37  zoom1.4  zoom0.7  zoom0.5  aniso0.6
       ADA Symlet-6    0.66    0.68   0.12   0.29   0.22     0.35     0.55     0.39
       CDF 9/7 (ours)  0.00    0.00   0.11   0.11   0.12     0.15     0.47     0.35
       bilinear, 1x    0.00    0.00   0.27   0.28   0.28     0.29     0.56     0.43
   It is also cheaper (7 + 9 taps instead of 2 x 12).
2. Colour, as one 4x4 homogeneous matrix per image acting on RGB: brightness (add b to all
   channels), contrast (scale about 0), luma flip (Householder reflection of the luma axis
   (1,1,1)/sqrt(3)), hue rotation about the luma axis, saturation (scale the chroma plane).
   One-channel images are treated as grey RGB (x, x, x): the matrix is applied and the mean of
   the three outputs is read back. Hue and saturation only act on chroma, which a grey image
   does not have, so they are skipped for one channel; brightness, contrast and luma flip
   (x -> -x) keep their meaning. Colour transforms need 1 or 3 channels.
3. Image-space filtering: four octave bands (pi/8 wide up to Nyquist) built from the Daubechies-2
   half-band pair; per band a log-normal gain, renormalised so the expected power of a 1/f
   image (band powers 10:1:1:1) is unchanged; applied separably with reflect padding.
4. Corruptions: additive Gaussian noise with a per-image half-normal std, and cutout (a zeroed
   rectangle of relative size `cutout_size` at a uniform random centre).

Execution of the geometry (`geometry_execution`): which path an image takes is decided from its
matrix on the device, and both modes give the same images (the blits bit for bit, the resamples
to float rounding) from the same random draws:
   - 'sub_batch': each path runs only on the images that take it (found with `nonzero`, gathered
     and scattered back). Fewest images resampled at small p, but every step reads the decision on
     the host and makes new shapes: right for the CPU, where a host read costs nothing.
   - 'masked': each path the configuration can produce runs on the whole batch (the blit whenever
     any geometry is enabled; the resample when scale, rotate, aniso or xfrac is, or rotate90 on
     images whose width - height is odd) and `torch.where` with [batch, 1, 1, 1] masks picks per
     image. Fixed shapes and no host read: right for CUDA, where a read waits for the device.
   - 'auto' (the default): 'sub_batch' for CPU tensors, 'masked' on every other device.
Nothing else in the forward pass reads a device value on the host or copies a host tensor to the
device: constants are built on the device from Python numbers (fills, eye, outer products).

Our choices (documented here and in docs/): the blit fast path (exact for the pixel-blitting
transforms, where resampling would blur in the last bits), the exact identity pass-through of
images no transform selected, geometry and colour always computed in float32 with autocast
disabled (the input dtype is restored at the end), and `debug_percentile` mapping to true
quantiles of each parameter's distribution (normal quantile sqrt(2)*erfinv(2q-1)) with every
enabled transform forced on and the post-rotation held at zero.
"""

import contextlib
import math

import numpy as np
import torch

from torch_utils import misc, persistence
from torch_utils.ops import conv2d_gradfix, grid_sample_gradfix, upfirdn2d

# The presets of train.py --augpipe (the official StyleGAN2-ADA contents; 'bgc' is the default).
_BLIT = {'xflip': 1, 'rotate90': 1, 'xint': 1}
_GEOM = {'scale': 1, 'rotate': 1, 'aniso': 1, 'xfrac': 1}
_COLOR = {'brightness': 1, 'contrast': 1, 'lumaflip': 1, 'hue': 1, 'saturation': 1}
AUGPIPE_SPECS = {
    'blit': dict(_BLIT),
    'geom': dict(_GEOM),
    'color': dict(_COLOR),
    'filter': {'imgfilter': 1},
    'noise': {'noise': 1},
    'cutout': {'cutout': 1},
    'bg': {**_BLIT, **_GEOM},
    'bgc': {**_BLIT, **_GEOM, **_COLOR},
    'bgcf': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1},
    'bgcfn': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1, 'noise': 1},
    'bgcfnc': {**_BLIT, **_GEOM, **_COLOR, 'imgfilter': 1, 'noise': 1, 'cutout': 1},
}
DEFAULT_AUGPIPE = 'bgc'

# How AugmentPipe runs the geometry's two paths (module docstring); 'auto' picks by device.
_GEOMETRY_EXECUTIONS = ('auto', 'sub_batch', 'masked')

# Expected relative power of the four filter bands for natural (1/f) images, lowest band first.
_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


class AugmentPipeError(ValueError):
    """An input or option the augmentation pipeline cannot handle."""


def daubechies2_lowpass():
    """Daubechies-2 scaling filter, closed form: (1 + r3, 3 + r3, 3 - r3, 1 - r3) / (4 sqrt2), r3 = sqrt3."""
    r3 = math.sqrt(3.0)
    return np.array([1 + r3, 3 + r3, 3 - r3, 1 - r3]) / (4 * math.sqrt(2.0))


def _symmetric_taps(polynomial_in_y):
    """Taps of sum_k c_k y^k with y = sin^2(w/2) = (2 - z - 1/z) / 4; coefficients lowest power first."""
    y_taps = np.array([-1.0, 2.0, -1.0]) / 4
    taps, power = np.zeros(1), np.ones(1)
    for coefficient in polynomial_in_y:
        grow = (len(power) - len(taps)) // 2
        taps = np.pad(taps, (grow, grow)) + coefficient * power
        power = np.convolve(power, y_taps)
    return taps


def cdf97_lowpass_pair():
    """CDF 9/7 low-pass filters (the JPEG 2000 wavelet) as (synthesis: 7 taps, analysis: 9 taps).

    Daubechies' half-band identity with four vanishing moments is
    cos^8(w/2) P(sin^2(w/2)) + sin^8(w/2) P(cos^2(w/2)) = 1, P(y) = 1 + 4y + 10y^2 + 20y^3.
    Splitting P at its real root gives two *symmetric* filters, cos^4(w/2) (1 - y/y_r) and
    cos^4(w/2) P(y) / (1 - y/y_r), whose product is that half-band filter: up-sampling with the
    first and down-sampling with the second reconstructs the input exactly. Both sum to 1.
    """
    daubechies_p = np.array([1.0, 4.0, 10.0, 20.0])  # lowest power first
    roots = np.roots(daubechies_p[::-1])
    real_root = float(roots[np.abs(roots.imag) < 1e-9].real[0])
    linear = np.array([1.0, -1.0 / real_root])
    quadratic, remainder = np.polydiv(daubechies_p[::-1], linear[::-1])
    assert np.allclose(remainder, 0)
    cos4 = np.convolve(np.array([1.0, 2.0, 1.0]) / 4, np.array([1.0, 2.0, 1.0]) / 4)
    synthesis = np.convolve(cos4, _symmetric_taps(linear))
    analysis = np.convolve(cos4, _symmetric_taps(quadratic[::-1]))
    return synthesis, analysis


def zero_phase_halfband(lowpass):
    """(h * reversed h) / 2 for an orthogonal low-pass h: a symmetric, odd-length half-band filter.

    Orthogonality (sum h[n] h[n + 2k] = delta[k]) makes it *interpolating*: centre tap 1/2, every
    other even-offset tap 0. Its taps sum to 1 and its response is 1/2 at half the sampling rate.
    """
    h = np.asarray(lowpass, dtype=np.float64)
    return np.convolve(h, h[::-1]) / 2


def octave_band_filters(num_bands=4):
    """1-D filters splitting a signal into `num_bands` octave bands; row 0 is the lowest band.

    For the Daubechies-2 wavelet h, lo = (h * reversed h) / 2 is a zero-phase half-band low-pass
    whose complement hi = delta - lo is the matching high-pass (|H(w)|^2 + |H(w+pi)|^2 = 2).
    Band k (from the top) applies lo at scales 1..2^(k-1) and hi at scale 2^k, so the bands
    telescope and sum to a delta: filtering with all gains 1 is the identity.
    """
    lo = zero_phase_halfband(daubechies2_lowpass())
    hi = -lo
    hi[len(hi) // 2] += 1

    def dilate(f, factor):
        out = np.zeros((len(f) - 1) * factor + 1)
        out[::factor] = f
        return out

    bands = []
    low_chain = np.ones(1)
    for level in range(num_bands - 1):
        bands.append(np.convolve(low_chain, dilate(hi, 2 ** level)))
        low_chain = np.convolve(low_chain, dilate(lo, 2 ** level))
    bands.append(low_chain)
    taps = max(len(b) for b in bands)
    bank = np.zeros([num_bands, taps])
    for row, band in enumerate(reversed(bands)):
        start = (taps - len(band)) // 2
        bank[row, start:start + len(band)] = band
    return bank


# ----------------------------------------------------------------------------------------------
# Batched homogeneous matrices. Every entry is a float or a [batch] tensor.

def _batched_matrix(rows, batch_size, device):
    entries = []
    for row in rows:
        for value in row:
            if torch.is_tensor(value):
                entries.append(value.to(torch.float32))
            else:
                entries.append(torch.full([batch_size], float(value), device=device))
    return torch.stack(entries, dim=1).reshape(batch_size, len(rows), len(rows[0]))


def _translation_2d(tx, ty, batch_size, device):
    return _batched_matrix([[1, 0, tx], [0, 1, ty], [0, 0, 1]], batch_size, device)


def _scaling_2d(sx, sy, batch_size, device):
    return _batched_matrix([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], batch_size, device)


def _inverse_rotation_2d(cos, sin, batch_size, device):
    # Inverse of the rotation by the angle with this cos/sin: its transpose.
    return _batched_matrix([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]], batch_size, device)


def _reflect_index(index, size):
    """Map integer coordinates onto [0, size) by mirroring at the edges (no edge repeat), any distance out."""
    if size == 1:
        return torch.zeros_like(index)
    period = 2 * (size - 1)
    index = index.remainder(period)
    return torch.where(index >= size, period - index, index)


def _reflect_coordinate(position, size):
    """Continuous version of `_reflect_index`: mirror positions about pixel 0 and pixel size-1."""
    if size == 1:
        return torch.zeros_like(position)
    period = 2 * (size - 1)
    position = position.remainder(period)
    return torch.where(position > size - 1, period - position, position)


def _reflect_pad(x, left, right, top, bottom):
    """Reflect padding of any width, by repeated reflection (torch's limit is size - 1 per call)."""
    while left > 0 or right > 0 or top > 0 or bottom > 0:
        height, width = x.shape[-2:]
        step = [min(left, width - 1), min(right, width - 1), min(top, height - 1), min(bottom, height - 1)]
        if sum(step) == 0:  # a 1-pixel-wide axis cannot be reflected: repeat it.
            return torch.nn.functional.pad(x, [left, right, top, bottom], mode='replicate')
        x = torch.nn.functional.pad(x, step, mode='reflect')
        left, right, top, bottom = (a - b for a, b in zip((left, right, top, bottom), step))
    return x


class _ParameterDraws:
    """Random parameters for one batch; with a debug percentile, fixed quantiles instead."""

    def __init__(self, batch_size, device, p, debug_percentile):
        self.batch_size = batch_size
        self.device = device
        self.p = p.detach().to(device=device, dtype=torch.float32)
        self.quantile = None
        if debug_percentile is not None:
            self.quantile = torch.full([], float(debug_percentile), dtype=torch.float32, device=device)

    def _full(self, value, shape):
        return value.expand(shape).clone()

    def uniform(self, low, high, shape=None):
        shape = [self.batch_size] if shape is None else shape
        if self.quantile is not None:
            unit = self._full(self.quantile, shape)
        else:
            unit = torch.rand(shape, device=self.device)
        return low + (high - low) * unit

    def normal(self, std, shape=None):
        shape = [self.batch_size] if shape is None else shape
        if self.quantile is not None:
            centred = (2 * self.quantile - 1).clamp(-1 + 1e-6, 1 - 1e-6)
            return self._full(math.sqrt(2) * torch.erfinv(centred) * std, shape)
        return torch.randn(shape, device=self.device) * std

    def half_normal(self, std, shape):
        if self.quantile is not None:
            return self._full(math.sqrt(2) * torch.erfinv(self.quantile.clamp(0, 1 - 1e-6)) * std, shape)
        return torch.randn(shape, device=self.device).abs() * std

    def integer(self, count):
        if self.quantile is not None:
            return self._full(torch.floor(self.quantile * count).clamp(0, count - 1), [self.batch_size])
        return torch.randint(0, count, [self.batch_size], device=self.device).to(torch.float32)

    def gate(self, values, identity, probability):
        """Keep `values` for images selected with `probability` (per image), `identity` elsewhere."""
        if self.quantile is not None:
            return values
        selector_shape = [self.batch_size] + [1] * (values.ndim - 1)
        selected = torch.rand(selector_shape, device=self.device) < probability
        return torch.where(selected, values, torch.full_like(values, identity))


@persistence.persistent_class
class AugmentPipe(torch.nn.Module):
    """The ADA pipeline. Each option is a probability multiplier (0 disables the transform).

    `geometry_execution` ('auto', 'sub_batch' or 'masked') only chooses how the geometry runs, not
    what it does (module docstring): 'auto' runs sub-batches on the CPU and masked whole-batch
    paths on other devices, so a CUDA training step never waits for the device.
    """

    def __init__(self,
        xflip=0, rotate90=0, xint=0, xint_max=0.125,
        scale=0, rotate=0, aniso=0, xfrac=0, scale_std=0.2, rotate_max=1, aniso_std=0.2, xfrac_std=0.125,
        brightness=0, contrast=0, lumaflip=0, hue=0, saturation=0, brightness_std=0.2, contrast_std=0.5,
        hue_max=1, saturation_std=1,
        imgfilter=0, imgfilter_bands=(1, 1, 1, 1), imgfilter_std=1,
        noise=0, cutout=0, noise_std=0.1, cutout_size=0.5,
        geometry_execution='auto',
    ):
        super().__init__()
        if geometry_execution not in _GEOMETRY_EXECUTIONS:
            raise AugmentPipeError(f'geometry_execution must be one of {", ".join(_GEOMETRY_EXECUTIONS)}, '
                                   f'got {geometry_execution!r}.')
        self.geometry_execution = geometry_execution
        # Overall probability; the training loop sets it (AdaptiveP or --p). 1 means "multipliers as given".
        self.register_buffer('p', torch.ones([]))

        # Pixel blitting. xint_max is relative to the image size.
        self.xflip, self.rotate90, self.xint = float(xflip), float(rotate90), float(xint)
        self.xint_max = float(xint_max)
        # General geometry. *_std of scales are log2 standard deviations; rotate_max 1 = full circle;
        # xfrac_std is relative to the image size.
        self.scale, self.rotate = float(scale), float(rotate)
        self.aniso, self.xfrac = float(aniso), float(xfrac)
        self.scale_std, self.rotate_max = float(scale_std), float(rotate_max)
        self.aniso_std, self.xfrac_std = float(aniso_std), float(xfrac_std)
        # Colour. contrast_std and saturation_std are log2 standard deviations; hue_max 1 = full circle.
        self.brightness, self.contrast, self.lumaflip = float(brightness), float(contrast), float(lumaflip)
        self.hue, self.saturation = float(hue), float(saturation)
        self.brightness_std, self.contrast_std = float(brightness_std), float(contrast_std)
        self.hue_max, self.saturation_std = float(hue_max), float(saturation_std)
        # Image-space filtering: per-band multipliers, log2 std of the band gains.
        self.imgfilter, self.imgfilter_bands = float(imgfilter), [float(b) for b in imgfilter_bands]
        self.imgfilter_std = float(imgfilter_std)
        # Corruptions. cutout_size is relative to the image size.
        self.noise, self.noise_std = float(noise), float(noise_std)
        self.cutout, self.cutout_size = float(cutout), float(cutout_size)

        band_filters = octave_band_filters()
        if len(self.imgfilter_bands) != band_filters.shape[0]:
            raise AugmentPipeError(f'imgfilter_bands needs {band_filters.shape[0]} multipliers (one per '
                                   f'octave band, lowest first), got {len(self.imgfilter_bands)}.')
        upsample_filter, downsample_filter = cdf97_lowpass_pair()
        # Constants, not state: kept out of state_dict so checkpoints only carry p.
        for name, taps in (('upsample_filter', upsample_filter), ('downsample_filter', downsample_filter)):
            taps = upfirdn2d.setup_filter(taps.tolist(), separable=True)
            self.register_buffer(name, taps, persistent=False)
        self.register_buffer('band_filters', torch.as_tensor(band_filters, dtype=torch.float32),
                             persistent=False)

    # ------------------------------------------------------------------------------------------

    def forward(self, images, debug_percentile=None):
        if not torch.is_tensor(images) or images.ndim != 4:
            shape = list(images.shape) if torch.is_tensor(images) else None
            raise AugmentPipeError('AugmentPipe expects a 4-D image batch [batch, channels, height, width]; '
                                   f'got {type(images).__name__} with shape {shape}.')
        batch_size, num_channels = images.shape[:2]
        colour_enabled = max(self.brightness, self.contrast, self.lumaflip, self.hue, self.saturation) > 0
        if colour_enabled and num_channels not in (1, 3):
            raise AugmentPipeError(f'Colour augmentations need 1 (grey) or 3 (RGB) channels, got '
                                   f'{num_channels}; use an --augpipe preset without colour (e.g. bg).')
        if batch_size == 0:
            return images

        device_type = images.device.type
        no_autocast = (torch.autocast(device_type=device_type, enabled=False)
                       if device_type in ('cpu', 'cuda') else contextlib.nullcontext())
        with no_autocast:
            x = images.to(torch.float32)
            draws = _ParameterDraws(batch_size, images.device, self.p, debug_percentile)
            x = self._geometry(x, draws)
            if colour_enabled:
                x = self._colour(x, draws)
            if self.imgfilter > 0:
                x = self._image_filter(x, draws)
            x = self._corruptions(x, draws)
        return x.to(images.dtype)

    # ------------------------------------------------------------------------------------------
    # Geometry.

    def _geometry(self, x, draws):
        if max(self.xflip, self.rotate90, self.xint, self.scale, self.rotate, self.aniso, self.xfrac) <= 0:
            return x
        batch_size, _, height, width = x.shape
        device = x.device
        ones = torch.ones([batch_size], device=device)
        g_inv = torch.eye(3, device=device).expand(batch_size, 3, 3)  # output pixel -> input pixel

        if self.xflip > 0:
            flip = draws.gate(draws.integer(2), 0, self.xflip * draws.p)
            g_inv = g_inv @ _scaling_2d(1 - 2 * flip, ones, batch_size, device)
        if self.rotate90 > 0:
            quarter_turns = draws.gate(draws.integer(4), 0, self.rotate90 * draws.p)
            # Exact integers by comparison (cos(pi/2) is not 0 in floating point), on the device.
            cos = (quarter_turns == 0).to(torch.float32) - (quarter_turns == 2).to(torch.float32)
            sin = (quarter_turns == 1).to(torch.float32) - (quarter_turns == 3).to(torch.float32)
            g_inv = g_inv @ _inverse_rotation_2d(cos, sin, batch_size, device)
        if self.xint > 0:
            shift = draws.uniform(-self.xint_max, self.xint_max, [batch_size, 2])
            shift = draws.gate(shift, 0, self.xint * draws.p)
            shift_x, shift_y = torch.round(shift[:, 0] * width), torch.round(shift[:, 1] * height)
            g_inv = g_inv @ _translation_2d(-shift_x, -shift_y, batch_size, device)
        if self.scale > 0:
            s = draws.gate(torch.exp2(draws.normal(self.scale_std)), 1, self.scale * draws.p)
            g_inv = g_inv @ _scaling_2d(1 / s, 1 / s, batch_size, device)
        # P(pre or post rotation) = rotate * p when each fires with 1 - sqrt(1 - rotate * p).
        p_rotation = 1 - torch.sqrt((1 - self.rotate * draws.p).clamp(0, 1))
        max_angle = math.pi * self.rotate_max
        if self.rotate > 0:
            theta = draws.gate(draws.uniform(-max_angle, max_angle), 0, p_rotation)
            g_inv = g_inv @ _inverse_rotation_2d(torch.cos(theta), torch.sin(theta), batch_size, device)
        if self.aniso > 0:
            s = draws.gate(torch.exp2(draws.normal(self.aniso_std)), 1, self.aniso * draws.p)
            g_inv = g_inv @ _scaling_2d(1 / s, s, batch_size, device)
        if self.rotate > 0:
            theta = draws.gate(draws.uniform(-max_angle, max_angle), 0, p_rotation)
            if draws.quantile is not None:
                theta = torch.zeros_like(theta)  # show a single rotation when visualising
            g_inv = g_inv @ _inverse_rotation_2d(torch.cos(theta), torch.sin(theta), batch_size, device)
        if self.xfrac > 0:
            shift = draws.gate(draws.normal(self.xfrac_std, [batch_size, 2]), 0, self.xfrac * draws.p)
            g_inv = g_inv @ _translation_2d(-shift[:, 0] * width, -shift[:, 1] * height, batch_size, device)

        # Which path each image takes, decided on the device from its matrix (no host read).
        g_decide = g_inv.detach()
        moved = (g_decide != torch.eye(3, device=device)).flatten(1).any(dim=1)
        integral = (g_decide == g_decide.round()).flatten(1).all(dim=1)
        linear = g_decide[:, :2, :2].abs()
        signed_permutation = (linear.sum(dim=1) == 1).all(dim=1) & (linear.sum(dim=2) == 1).all(dim=1)
        swaps_axes = linear[:, 0, 0] == 0
        # Swapping axes maps pixel centres onto pixel centres only if (width - height) is even.
        blit = moved & integral & signed_permutation
        if (width - height) % 2 != 0:
            blit = blit & ~swaps_axes
        resample = moved & ~blit

        execution = self.geometry_execution
        if execution == 'auto':
            execution = 'sub_batch' if device.type == 'cpu' else 'masked'
        out = x
        if execution == 'sub_batch':
            # Host reads and data-dependent shapes: free on the CPU, a sync per read on a GPU.
            for selected, execute in ((blit, self._blit), (resample, self._resample)):
                if selected.any():
                    index = selected.nonzero()[:, 0]
                    out = out.index_copy(0, index, execute(x[index], g_inv[index]))
            return out

        # Masked: every path the configuration can produce runs on the whole batch. Any matrix may
        # land on the pixel grid (a gated or quantile draw can give an integral one), so the cheap
        # blit always runs; only scale, rotate, aniso and xfrac, or a quarter turn that cannot
        # be blitted (odd width - height), ever need the resample.
        resample_possible = max(self.scale, self.rotate, self.aniso, self.xfrac) > 0 \
            or (self.rotate90 > 0 and (width - height) % 2 != 0)
        out = torch.where(blit.reshape(batch_size, 1, 1, 1), self._blit(x, g_inv), out)
        if resample_possible:
            out = torch.where(resample.reshape(batch_size, 1, 1, 1), self._resample(x, g_inv), out)
        return out

    @staticmethod
    def _centred_grid(height, width, device, x_coords=None, y_coords=None):
        """Pixel coordinates relative to the image centre, as a [rows, cols, 3] homogeneous grid."""
        xs = torch.arange(width, device=device, dtype=torch.float32) if x_coords is None else x_coords
        ys = torch.arange(height, device=device, dtype=torch.float32) if y_coords is None else y_coords
        gy, gx = torch.meshgrid(ys - (height - 1) / 2, xs - (width - 1) / 2, indexing='ij')
        return torch.stack([gx, gy, torch.ones_like(gx)], dim=-1)

    def _blit(self, x, g_inv):
        count, channels, height, width = x.shape
        grid = self._centred_grid(height, width, x.device)
        source = torch.einsum('nij,hwj->nhwi', g_inv, grid)  # [n, h, w, xyz] in centred input coordinates
        src_x = _reflect_index(torch.round(source[..., 0] + (width - 1) / 2).long(), width)
        src_y = _reflect_index(torch.round(source[..., 1] + (height - 1) / 2).long(), height)
        pixels = height * width
        flat_index = (src_y * width + src_x).reshape(count, 1, pixels).expand(count, channels, pixels)
        gathered = x.reshape(count, channels, pixels).gather(2, flat_index)
        return gathered.reshape(count, channels, height, width)

    def _resample(self, x, g_inv):
        count, channels, height, width = x.shape
        up_reach = (self.upsample_filter.shape[0] - 1) // 2  # half-lengths, in 2x samples
        down_reach = (self.downsample_filter.shape[0] - 1) // 2
        # Output border (original pixels) so the down-sampling filter reads only sampled values.
        border = (down_reach + 1) // 2

        # Up-sample 2x. Sample 2k sits on pixel k, sample 2k + 1 halfway to pixel k + 1 (the grid
        # convention of odd, symmetric filters). A margin of reflected pixels covering the filter's
        # reach makes the samples from pixel 0 to pixel size-1 those of the reflect-extended image.
        margin = (up_reach + 1) // 2
        x = _reflect_pad(x, margin, margin, margin, margin)
        x = upfirdn2d.upfirdn2d(x, self.upsample_filter, up=2, padding=up_reach, gain=4)
        x = x[:, :, 2 * margin:2 * (margin + height) - 1, 2 * margin:2 * (margin + width) - 1]

        # The reflect-extended image, and (the filter being symmetric) its 2x version, are mirror-
        # symmetric about the first and last pixel, so sampling it anywhere equals sampling the
        # 2x image at the mirrored position: no padded copy is ever built, at any distance.
        out_x = torch.arange(2 * (width + 2 * border), dtype=torch.float32, device=x.device) / 2 - border
        out_y = torch.arange(2 * (height + 2 * border), dtype=torch.float32, device=x.device) / 2 - border
        grid = self._centred_grid(height, width, x.device, out_x, out_y)
        source = torch.einsum('nij,hwj->nhwi', g_inv, grid)
        source_x = _reflect_coordinate(source[..., 0] + (width - 1) / 2, width)
        source_y = _reflect_coordinate(source[..., 1] + (height - 1) / 2, height)
        # Pixel position u is 2x sample 2u, which grid_sample (align_corners=False) calls (4u + 1) / size - 1.
        normalised = torch.stack([(4 * source_x + 1) / x.shape[3] - 1,
                                  (4 * source_y + 1) / x.shape[2] - 1], dim=-1)
        x = grid_sample_gradfix.grid_sample(x, normalised)

        # Anti-alias, keep the even samples, drop the border.
        x = upfirdn2d.upfirdn2d(x, self.downsample_filter, down=2, padding=down_reach - 2 * border)
        misc.assert_shape(x, [count, channels, height, width])
        return x

    # ------------------------------------------------------------------------------------------
    # Colour.

    def _colour(self, x, draws):
        batch_size, num_channels, height, width = x.shape
        device = x.device
        # Constants made on the device from Python numbers (no host tensor is copied over).
        identity = torch.eye(4, device=device)
        rgb_identity = identity.clone()
        rgb_identity[3, 3] = 0
        luma_axis = rgb_identity.diagonal() / math.sqrt(3)
        luma_projection = torch.outer(luma_axis, luma_axis)
        chroma_projection = rgb_identity - luma_projection
        offset_rgb = torch.zeros([4, 4], device=device)
        offset_rgb[:3, 3] = 1
        # Cross-product matrix of the luma axis v = (c, c, c): [[0, -c, c], [c, 0, -c], [-c, c, 0]].
        cyclic_shift = torch.eye(3, device=device).roll(-1, dims=1)  # row i has its 1 in column i - 1
        cross_luma = torch.zeros([4, 4], device=device)
        cross_luma[:3, :3] = luma_axis[0] * (cyclic_shift - cyclic_shift.T)

        def per_image(values):
            return values.reshape(batch_size, 1, 1)

        colour = identity.expand(batch_size, 4, 4)  # colour_in -> colour_out, composed left to right
        if self.brightness > 0:
            b = draws.gate(draws.normal(self.brightness_std), 0, self.brightness * draws.p)
            colour = (identity + per_image(b) * offset_rgb) @ colour
        if self.contrast > 0:
            c = draws.gate(torch.exp2(draws.normal(self.contrast_std)), 1, self.contrast * draws.p)
            colour = (identity + per_image(c - 1) * rgb_identity) @ colour
        if self.lumaflip > 0:
            flip = draws.gate(draws.integer(2), 0, self.lumaflip * draws.p)
            colour = (identity - 2 * per_image(flip) * luma_projection) @ colour
        if self.hue > 0 and num_channels == 3:
            theta = draws.uniform(-math.pi * self.hue_max, math.pi * self.hue_max)
            theta = draws.gate(theta, 0, self.hue * draws.p)
            # Rodrigues' rotation about the luma axis: the luma component is left alone.
            rotation = (identity + per_image(torch.cos(theta) - 1) * chroma_projection
                        + per_image(torch.sin(theta)) * cross_luma)
            colour = rotation @ colour
        if self.saturation > 0 and num_channels == 3:
            s = draws.gate(torch.exp2(draws.normal(self.saturation_std)), 1, self.saturation * draws.p)
            colour = (identity + per_image(s - 1) * chroma_projection) @ colour

        flat = x.reshape(batch_size, num_channels, height * width)
        if num_channels == 3:
            transformed = colour[:, :3, :3] @ flat + colour[:, :3, 3:]
        else:
            # Grey x stands for (x, x, x): out = mean over rows of (M @ (x, x, x, 1)).
            grey_row = colour[:, :3, :].mean(dim=1, keepdim=True)  # [batch, 1, 4]
            transformed = flat * grey_row[:, :, :3].sum(dim=2, keepdim=True) + grey_row[:, :, 3:]
        changed = (colour != identity).flatten(1).any(dim=1).reshape(batch_size, 1, 1)
        return torch.where(changed, transformed, flat).reshape(batch_size, num_channels, height, width)

    # ------------------------------------------------------------------------------------------
    # Image-space filtering and corruptions.

    def _image_filter(self, x, draws):
        batch_size, num_channels, height, width = x.shape
        device = x.device
        num_bands, taps = self.band_filters.shape
        band_power = torch.empty([num_bands], device=device)
        for band, power in enumerate(_BAND_POWER):  # fills on the device: no host tensor copied over
            band_power[band] = power
        gains = torch.ones([batch_size, num_bands], device=device)
        changed = torch.zeros([batch_size], dtype=torch.bool, device=device)
        for band, band_multiplier in enumerate(self.imgfilter_bands):
            if band_multiplier <= 0:
                continue
            amplification = draws.gate(torch.exp2(draws.normal(self.imgfilter_std)), 1,
                                       self.imgfilter * band_multiplier * draws.p)
            changed = changed | (amplification != 1)
            band_gains = torch.ones([batch_size, num_bands], device=device)
            band_gains[:, band] = amplification
            # Renormalise so the expected power of a 1/f image stays the same.
            band_gains = band_gains / (band_power * band_gains.square()).sum(dim=1, keepdim=True).sqrt()
            gains = gains * band_gains

        kernel = (gains @ self.band_filters).unsqueeze(1).expand(batch_size, num_channels, taps)
        kernel = kernel.reshape(batch_size * num_channels, taps)
        half = taps // 2
        flat = _reflect_pad(x.reshape(1, batch_size * num_channels, height, width), half, half, half, half)
        groups = batch_size * num_channels
        flat = conv2d_gradfix.conv2d(flat, kernel.reshape(groups, 1, 1, taps), groups=groups)
        flat = conv2d_gradfix.conv2d(flat, kernel.reshape(groups, 1, taps, 1), groups=groups)
        filtered = flat.reshape(batch_size, num_channels, height, width)
        return torch.where(changed.reshape(batch_size, 1, 1, 1), filtered, x)

    def _corruptions(self, x, draws):
        batch_size, num_channels, height, width = x.shape
        device = x.device
        if self.noise > 0:
            sigma = draws.half_normal(self.noise_std, [batch_size, 1, 1, 1])
            sigma = draws.gate(sigma, 0, self.noise * draws.p)
            x = x + torch.randn([batch_size, num_channels, height, width], device=device) * sigma
        if self.cutout > 0:
            size = torch.full([batch_size, 1, 1], self.cutout_size, device=device)
            size = draws.gate(size, 0, self.cutout * draws.p)
            centre_x = draws.uniform(0, 1, [batch_size, 1, 1])
            centre_y = draws.uniform(0, 1, [batch_size, 1, 1])
            pixel_x = ((torch.arange(width, device=device) + 0.5) / width).reshape(1, 1, width)
            pixel_y = ((torch.arange(height, device=device) + 0.5) / height).reshape(1, height, 1)
            outside = ((pixel_x - centre_x).abs() >= size / 2) | ((pixel_y - centre_y).abs() >= size / 2)
            x = x * outside.unsqueeze(1).to(x.dtype)
        return x


# ----------------------------------------------------------------------------------------------

class AdaptiveP:
    """The ADA heuristic: nudge p so that E[sign(D(real))] tracks `target`.

    Call `accumulate(real_logits)` after every D pass on reals and `update(augment_pipe,
    batch_size)` once per training step (batch_size = global batch). Every `interval` steps:
    p <- max(p + sign(E[sign(D(real))] - target) * batch_size * interval / (kimg * 1000), 0),
    so p can move from 0 to 1 in `kimg` thousand images. Under torch.distributed the sign
    statistics are summed over all processes first (every rank must call `update`).
    """

    def __init__(self, target=0.6, interval=4, kimg=500):
        if not -1 <= float(target) <= 1:
            raise ValueError(f'ADA target must lie in [-1, 1] (it is compared with the mean sign of D on '
                             f'reals), got {target}.')
        if int(interval) < 1 or float(kimg) <= 0:
            raise ValueError(f'ADA needs interval >= 1 and kimg > 0, got interval={interval}, kimg={kimg}.')
        self.target = float(target)
        self.interval = int(interval)
        self.kimg = float(kimg)
        self._steps = 0
        self._sign_sum = 0.0  # becomes a device tensor while accumulating, to avoid a sync per step
        self._count = 0

    def accumulate(self, real_logits):
        signs = real_logits.detach().to(torch.float32).sign()
        self._sign_sum = self._sign_sum + signs.sum()
        self._count += signs.numel()

    def step_size(self, batch_size):
        return batch_size * self.interval / (self.kimg * 1000)

    def update(self, augment_pipe, batch_size):
        """Count one training step; on every `interval`-th adjust augment_pipe.p, on its device.

        Nothing is read back to the host (no sync): the sign statistics are summed on the device,
        all-reduced there under torch.distributed, and p is updated in place. The arithmetic is
        float64 and the result is stored in p's float32, so a resumed run gives identical values.
        """
        self._steps += 1
        if self._steps % self.interval != 0:
            return
        p = augment_pipe.p
        sign_sum = torch.zeros([], dtype=torch.float64, device=p.device) + self._sign_sum  # a tensor or 0.0
        count = torch.full([], float(self._count), dtype=torch.float64, device=p.device)
        stats = torch.stack([sign_sum, count])
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_world_size() > 1:
            torch.distributed.all_reduce(stats)
        sign_sum, count = stats.unbind()
        self._sign_sum, self._count = 0.0, 0
        mean_sign = sign_sum / count.clamp(min=1)
        moved = (p.double() + torch.sign(mean_sign - self.target) * self.step_size(batch_size)).clamp(min=0)
        with torch.no_grad():
            p.copy_(torch.where(count > 0, moved, p.double()).to(p.dtype))

    def state_dict(self):
        return {'target': self.target, 'interval': self.interval, 'kimg': self.kimg, 'steps': self._steps,
                    'sign_sum': float(self._sign_sum), 'count': int(self._count)}

    def load_state_dict(self, state):
        missing = {'target', 'interval', 'kimg', 'steps', 'sign_sum', 'count'} - set(state)
        if missing:
            raise ValueError(f'AdaptiveP state is missing {sorted(missing)}; pass the dict saved by '
                             'AdaptiveP.state_dict().')
        self.target = float(state['target'])
        self.interval = int(state['interval'])
        self.kimg = float(state['kimg'])
        self._steps = int(state['steps'])
        self._sign_sum = float(state['sign_sum'])
        self._count = int(state['count'])

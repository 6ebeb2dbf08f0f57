"""2-D convolution fused with FIR up- or down-sampling, in plain PyTorch.

Semantics (StyleGAN2-ADA's, so pickled official networks compute the same thing): with the
padding adjusted for the filter as in `upfirdn2d.upsample2d` / `downsample2d`,

    y = upfirdn2d(x, f, up=up, padding=p, gain=up**2)    # only if up > 1, else just pad x
    y = conv(y, w, groups)                               # no padding; flip_weight=True correlates
    y = upfirdn2d(y, f, down=down)                       # only if down > 1

Because the convolution and the per-channel FIR filter are both linear and shift-invariant, they
commute, which gives the fast orders used below:
- up-sampling: a strided *transposed* convolution of the small input (no zero-filled 4x image
  is ever convolved with the dense weights), then the FIR filter as a cheap depthwise conv;
- down-sampling: the FIR filter first (depthwise), then a strided convolution that computes only
  the kept pixels;
- 1x1 weights: the channel mixing runs on the lower-resolution side of the resampling.
The dense convolutions go through ``torch.nn.functional`` so autocast runs them in bf16/fp16.
On CPU, channels-last activations are the fastest layout for every path here (oneDNN's native
layout); NCHW inputs work and come back NCHW.
"""

import torch
import torch.nn.functional as F

from .upfirdn2d import _ONEDNN_DTYPES, _get_filter_size, _is_channels_last, _parse_padding, _upfirdn2d


def _conv(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d correlates; ``flip_weight=False`` asks for a true convolution, so flip then."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return F.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return F.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _transposed_weight(w, groups):
    """``[out, in/g, kh, kw]`` conv weights as ``[in, out/g, kh, kw]`` conv_transpose2d weights."""
    out_channels, in_per_group, kh, kw = w.shape
    if groups == 1:
        return w.transpose(0, 1)
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw).transpose(1, 2)
    return w.reshape(groups * in_per_group, out_channels // groups, kh, kw)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    """Convolve ``x`` [N, C_in, H, W] with ``w`` [C_out, C_in/groups, kh, kw], optionally
    up- or down-sampling with the FIR filter ``f`` (from `upfirdn2d.setup_filter`).

    ``padding`` (int, ``[x, y]`` or ``[x0, x1, y0, y1]``) is w.r.t. the up-sampled image and
    applied once, before everything. ``flip_weight=True`` correlates like ``F.conv2d``;
    ``flip_filter=True`` correlates with ``f``. Returns ``[N, C_out, H', W']`` in ``x``'s dtype
    (under autocast, the autocast dtype); e.g. a 3x3 kernel with padding 1 gives
    ``H' = H * up // down``.
    """
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('conv2d_resample expects a 4-D [batch, channels, height, width] input.')
    if not isinstance(w, torch.Tensor) or w.ndim != 4:
        raise ValueError('conv2d_resample expects 4-D [out, in/groups, kh, kw] weights.')
    if not isinstance(up, int) or not isinstance(down, int) or up < 1 or down < 1:
        raise ValueError(f'conv2d_resample up/down must be positive ints, got up={up!r}, down={down!r}.')
    if not isinstance(groups, int) or groups < 1 or x.shape[1] != w.shape[1] * groups or w.shape[0] % groups:
        raise ValueError(f'conv2d_resample: input has {x.shape[1]} channels but weights {list(w.shape)} '
                         f'with groups={groups} expect {w.shape[1] * groups}.')
    if f is None and (up > 1 or down > 1):
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Extra padding that centres the filter footprint, exactly as upsample2d / downsample2d do.
    if up > 1:
        px0, px1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2
        py0, py1 = py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    pad = [px0, px1, py0, py1]

    # On CPU, oneDNN runs transposed and depthwise convolutions natively in channels-last
    # layout and reorders NCHW tensors on every call (the 4x larger output too). So NCHW inputs
    # are computed in channels-last and converted back once at the end: measured ~25% faster
    # forward+backward for the up path in fp32. Channels-last inputs skip both conversions.
    on_onednn = x.device.type == 'cpu' and x.dtype in _ONEDNN_DTYPES
    restore_nchw = on_onednn and not _is_channels_last(x)
    y = _resample_and_convolve(x, w, f, up, down, pad, groups, flip_weight, flip_filter,
                               channels_last_input=on_onednn and groups == 1)
    if restore_nchw and not y.is_contiguous():
        y = y.contiguous()
    return y


def _resample_and_convolve(x, w, f, up, down, pad, groups, flip_weight, flip_filter, channels_last_input):
    """The fast orders of operations; results may be channels-last (the caller restores)."""
    px0, px1, py0, py1 = pad
    kh, kw = int(w.shape[2]), int(w.shape[3])

    def fir(t, **kwargs):
        return _upfirdn2d(t, f, flip_filter=flip_filter, allow_channels_last=True, **kwargs)

    if kw == 1 and kh == 1 and down > 1 and up == 1:
        # A 1x1 conv commutes with subsampling: shrink the image before mixing channels.
        return _conv(fir(x, down=down, padding=pad), w, groups=groups, flip_weight=flip_weight)

    if kw == 1 and kh == 1 and up > 1 and down == 1:
        # ...and with up-sampling: mix channels at the low resolution, then enlarge.
        return fir(_conv(x, w, groups=groups, flip_weight=flip_weight), up=up, padding=pad, gain=up ** 2)

    if down > 1 and up == 1:
        return _conv(fir(x, padding=pad), w, stride=down, groups=groups, flip_weight=flip_weight)

    if up > 1:
        # Transposed conv of the raw input == conv of its zero-inserted version with the kernel
        # flipped once more; its output is (in - 1) * up + k wide, starting k - 1 samples before
        # the padded image, and the FIR filter's padding accounts for that shift.
        fx0, fx1 = px0 - (kw - 1), px1 - (kw - up)
        fy0, fy1 = py0 - (kh - 1), py1 - (kh - up)
        crop_x = max(min(-fx0, -fx1), 0)  # cropping both sides is free inside conv_transpose2d
        crop_y = max(min(-fy0, -fy1), 0)
        if channels_last_input:
            x = x.contiguous(memory_format=torch.channels_last)
        x = _conv(x, _transposed_weight(w, groups), stride=up, padding=[crop_y, crop_x], groups=groups,
                  transpose=True, flip_weight=not flip_weight)
        x = fir(x, padding=[fx0 + crop_x, fx1 + crop_x, fy0 + crop_y, fy1 + crop_y], gain=up ** 2)
        return fir(x, down=down) if down > 1 else x

    # No resampling: the filter plays no role, only the padding.
    if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
        return _conv(x, w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)
    return _conv(F.pad(x, pad), w, groups=groups, flip_weight=flip_weight)

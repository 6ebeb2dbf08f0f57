"""Upsample, pad, FIR-filter and downsample batches of 2-D images, in plain PyTorch.

Semantics (the StyleGAN2-ADA convention, which pickled official networks rely on), per channel:

1. up-sample by inserting ``up - 1`` zeros after every pixel,
2. pad with zeros (negative padding crops), padding counted on the up-sampled image,
3. convolve with the FIR filter ``f`` keeping only outputs whose footprint lies inside the
   padded image (``flip_filter=True`` correlates instead),
4. down-sample by keeping every ``down``-th pixel.

How it runs fast on CPU (timed on a 2-core AVX-512 machine): the filter is one *depthwise*
convolution, which oneDNN runs far faster than a 1-channel convolution over ``batch*channels``
images or a Python shift-and-add loop. NCHW inputs have their batch folded into the channel
axis first (a free reshape) because oneDNN's depthwise kernels vectorise over channels: an
RGB batch went from 75 ms to 5 ms. A short separable filter (< 8 taps, e.g. [1, 3, 3, 1])
is expanded to its outer product since one 2-D pass beats two 1-D passes; longer ones (ADA's
12-tap wavelet) stay two 1-D passes. Zero insertion is a depthwise *transposed* convolution
with stride ``up`` (the zeros are never materialised) and down-sampling is the convolution's
stride (discarded pixels are never computed).

Where oneDNN is slow the filter runs as shifted slices instead (`_fir_axis`): a separable filter
becomes a few multiply-adds over views of the input per axis, polyphase for up-sampling (each
output phase reads only the taps that hit real samples, so no zero is ever touched). That is the
path for bfloat16/float16 up-sampling, whose transposed depthwise convolution oneDNN runs ~8x
slower than the slices, and for float64; see `_slices_are_faster` for the measurements.

Gradients: the op is linear in ``x``, and its backward is its adjoint, which is again an
upfirdn2d (see `_FIRResample`), so gradients of every order (R1, path length) cost the same as
the forward pass. Everything runs in ``x``'s dtype on ``x``'s device (under CPU autocast the
depthwise convolutions run in bf16, the slices in ``x``'s dtype). ``impl`` is accepted for
compatibility; every value runs this code.
"""

import numpy as np
import torch
import torch.nn.functional as F

# Filters at least this long are applied as two 1-D passes; shorter ones as one 2-D pass.
_SEPARABLE_MIN_TAPS = 8

_IMPLS = ('ref', 'cuda')
_CPU = torch.device('cpu')

# Dtypes oneDNN convolves natively on CPU (float64 takes a slow generic path in any layout).
_ONEDNN_DTYPES = (torch.float32, torch.bfloat16, torch.float16)

# From this many channels on, converting NCHW to channels-last beats folding the batch.
_CHANNELS_LAST_MIN_CHANNELS = 16


def _parse_scaling(scaling):
    """Up/down factor as ``(sx, sy)`` from an int or an ``[x, y]`` pair."""
    if isinstance(scaling, (int, np.integer)):
        scaling = [int(scaling), int(scaling)]
    if not isinstance(scaling, (list, tuple)) or len(scaling) != 2:
        raise ValueError(f'Scaling factor must be an int or an [x, y] pair, got {scaling!r}.')
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f'Scaling factors must be >= 1, got {scaling!r}.')
    return sx, sy


def _parse_padding(padding):
    """Padding as ``(x_before, x_after, y_before, y_after)`` from an int, ``[x, y]`` or a 4-list."""
    if isinstance(padding, (int, np.integer)):
        padding = [int(padding)] * 2
    if not isinstance(padding, (list, tuple)) or len(padding) not in (2, 4):
        raise ValueError(f'Padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding!r}.')
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    return tuple(padding)


def _get_filter_size(f):
    """Filter footprint as ``(width, height)``; a 1-D filter is separable, so square."""
    if f is None:
        return 1, 1
    if not isinstance(f, torch.Tensor) or f.ndim not in (1, 2):
        raise ValueError('FIR filter must be a 1-D (separable) or 2-D torch tensor, or None.')
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    if fw < 1 or fh < 1:
        raise ValueError('FIR filter must have at least one tap.')
    return fw, fh


def setup_filter(f, device=_CPU, normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a list/array/tensor into the float32 FIR filter tensor `upfirdn2d` expects.

    ``f``: ``[taps]`` (separable), ``[height, width]``, a scalar, or ``None`` (identity).
    ``normalize`` makes the taps sum to one, so a constant image keeps its value; ``gain``
    scales the overall signal (for a separable filter each pass gets ``sqrt(gain)``).
    ``separable=None`` keeps 1-D filters of 8 taps or more separable and expands shorter
    ones to their outer product (the layout pickled official networks store in buffers).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim > 2 or f.numel() == 0:
        raise ValueError(f'FIR filter must be a non-empty scalar, 1-D or 2-D array, got shape {list(f.shape)}.')
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= _SEPARABLE_MIN_TAPS
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if separable and f.ndim != 1:
        raise ValueError('A separable FIR filter must be given as a 1-D list of taps.')
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def _depthwise_kernels(f, channels, dtype, device, flip, gain):
    """The filter as depthwise conv weights ``[C, 1, kh, kw]`` (one or two of them)."""
    f = f.to(device=device, dtype=dtype)
    if flip:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        if gain != 1:
            f = f * gain
        return [f[None, None].expand(channels, 1, *f.shape).contiguous()]
    if f.numel() < _SEPARABLE_MIN_TAPS:
        # One 2-D depthwise pass is faster than two 1-D passes for short filters.
        f2 = torch.outer(f, f)
        if gain != 1:
            f2 = f2 * gain
        return [f2[None, None].expand(channels, 1, *f2.shape).contiguous()]
    if gain != 1:
        f = f * float(np.sqrt(gain))
    taps = f.numel()
    horizontal = f.reshape(1, 1, 1, taps).expand(channels, 1, 1, taps).contiguous()
    vertical = f.reshape(1, 1, taps, 1).expand(channels, 1, taps, 1).contiguous()
    return [horizontal, vertical]


def _split_padding(p0, p1):
    """Split ``(before, after)`` padding into a symmetric part >= 0 and the remainder."""
    symmetric = max(min(p0, p1), 0)
    return symmetric, p0 - symmetric, p1 - symmetric


def _is_channels_last(x):
    # Checking the channel stride (not "and not NCHW-contiguous") lets a one-channel image opt in
    # with a channels-last view, although its plain strides also pass both contiguity tests.
    return x.stride(1) == 1 and x.is_contiguous(memory_format=torch.channels_last)


def _separable_taps(f, flip, gain):
    """The filter as ``(horizontal, vertical)`` lists of float taps (ready to correlate with, gain
    included), or ``None`` when ``f`` is a 2-D filter that is not an outer product."""
    f = f.detach().to(device=_CPU, dtype=torch.float64)
    if flip:
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 1:
        return (f * gain).tolist(), f.tolist()  # the whole gain on one axis: any sign works
    # setup_filter stores short separable filters as their outer product; undo that when exact.
    vertical, horizontal = f.sum(dim=1), f.sum(dim=0)
    total = float(f.sum())
    if total == 0 or not torch.allclose(torch.outer(vertical, horizontal) / total, f, rtol=1e-6, atol=1e-9):
        return None
    return (horizontal * (gain / total)).tolist(), vertical.tolist()


def _pad_axis(x, dim, before, after):
    """Zero-pad (negative: crop) dimension ``dim`` (2 or 3) of ``x``, keeping its memory layout."""
    if before == 0 and after == 0:
        return x
    pads = [before, after, 0, 0] if dim == 3 else [0, 0, before, after]
    return F.pad(x, pads)


def _strided(x, dim, start, count, step):
    """``count`` samples of dimension ``dim``, every ``step``-th from ``start`` (a view)."""
    index = [slice(None)] * x.ndim
    index[dim] = slice(start, start + (count - 1) * step + 1, step)
    return x[tuple(index)]


def _fir_axis(x, taps, dim, up, down, pad0, pad1):
    """One axis of a separable upfirdn2d by shifted slices (polyphase for ``up > 1``).

    Correlates the zero-inserted, padded signal with ``taps``. Each output sample is a weighted
    sum of a few input samples, so the whole pass is ``len(taps)`` memory-bound multiply-adds over
    views of ``x`` -- fast in every dtype and layout, and no zero of the up-sampled signal is ever
    read. Runs outside autograd (inside `_FIRResample`), so it may write into its own outputs.
    """
    length = x.shape[dim]
    taps_count = len(taps)
    out_len = (length * up + pad0 + pad1 - taps_count) // down + 1
    if up == 1:
        x = _pad_axis(x, dim, pad0, pad1)
        y = None
        for k, tap in enumerate(taps):
            if tap == 0:
                continue
            window = _strided(x, dim, k, out_len, down)
            y = window * tap if y is None else y.add_(window, alpha=tap)
        return y if y is not None else _strided(x, dim, 0, out_len, down) * 0

    # Output n = up*j + r reads input j + (r + k - pad0) / up for the taps k of its phase r;
    # down-sampling afterwards keeps every `down`-th output (rare: no network combines both).
    out_len = length * up + pad0 + pad1 - taps_count + 1
    phases = []
    for r in range(up):
        count = len(range(r, out_len, up))
        terms = [((r + k - pad0) // up, tap) for k, tap in enumerate(taps)
                 if (r + k - pad0) % up == 0 and tap != 0]
        phases.append((r, count, terms))
    offsets = [o for _, count, terms in phases if count for o, _ in terms] or [0]
    counts = [count for _, count, _ in phases]
    before = max(0, -min(offsets))
    after = max(0, max(offsets) + max(counts) - length)
    x = _pad_axis(x, dim, before, after)
    shape = list(x.shape)
    shape[dim] = out_len
    y = torch.empty(shape, dtype=x.dtype, device=x.device, memory_format=_memory_format(x))
    for r, count, terms in phases:
        if count == 0:
            continue
        out = _strided(y, dim, r, count, up)
        if not terms:
            out.zero_()
            continue
        (offset, tap), rest = terms[0], terms[1:]
        torch.mul(_strided(x, dim, offset + before, count, 1), tap, out=out)
        for offset, tap in rest:
            out.add_(_strided(x, dim, offset + before, count, 1), alpha=tap)
    if down > 1:
        y = _strided(y, dim, 0, len(range(0, out_len, down)), down)
    return y


def _memory_format(x):
    return torch.channels_last if _is_channels_last(x) else torch.contiguous_format


def _slices_are_faster(x, params):
    """Whether `_fir_sliced` beats oneDNN's depthwise convolution for this CPU call.

    Measured on one core (8x64x64x64 and 8x128x32x32, channels-last): oneDNN's depthwise
    convolution is 2-4x faster than the slices in float32 and bfloat16, except the *transposed*
    depthwise convolution (``up > 1``) in bfloat16/float16, which takes a slow path (49 ms vs 6 ms
    for 8x128x32x32 -> 64x64). Other dtypes (float64) have no fast convolution at all.
    """
    upx, upy = params[0], params[1]
    if x.dtype not in _ONEDNN_DTYPES:
        return True
    return (upx > 1 or upy > 1) and x.dtype != torch.float32


def _fir_sliced(x, f, params):
    """`_fir_convolve` by shifted slices when ``f`` is separable; ``None`` if it is not."""
    upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain = params
    # conv flips the filter, correlation does not; the slices below correlate.
    taps = _separable_taps(f, flip=not flip_filter, gain=gain)
    if taps is None:
        return None
    horizontal, vertical = taps
    if upx == 1 and upy == 1 and (px0 or px1) and (py0 or py1):
        x = F.pad(x, [px0, px1, py0, py1])  # both axes in one copy
        px0 = px1 = py0 = py1 = 0
    x = _fir_axis(x, horizontal, 3, upx, downx, px0, px1)
    x = _fir_axis(x, vertical, 2, upy, downy, py0, py1)
    return x


def _fir_convolve(x, f, params, allow_channels_last=False, differentiable_filter=False):
    """The resampling itself, as depthwise (transposed) convolutions; ordinary autograd ops.

    oneDNN's depthwise kernels vectorise over channels and run natively in channels-last
    layout. Channels-last input runs as is. Otherwise, when the caller accepts a channels-last
    result (`conv2d_resample`, every backward pass), inputs with many channels are converted
    to it; with few channels (RGB images), or when the layout must be kept, the batch is folded
    into the channel axis instead, a free reshape with the same effect on small channel counts.
    Measured on CPU: 32x3x176x176 images 75 ms -> 5 ms by folding; 8x128x64x64 NCHW about
    12 ms folded vs about 4 ms converted to channels-last (2 threads).
    """
    batch, channels, height, width = x.shape
    if x.device.type == 'cpu' and not differentiable_filter and _slices_are_faster(x, params):
        y = _fir_sliced(x, f, params)
        if y is not None:
            return y
    if _is_channels_last(x) and channels > 1:  # one channel: folding the batch vectorises better
        return _fir_convolve_grouped(x, f, *params)
    if (allow_channels_last and channels >= _CHANNELS_LAST_MIN_CHANNELS and x.device.type == 'cpu'
            and x.dtype in _ONEDNN_DTYPES):
        return _fir_convolve_grouped(x.contiguous(memory_format=torch.channels_last), f, *params)
    y = _fir_convolve_grouped(x.reshape(1, batch * channels, height, width), f, *params)
    return y.reshape(batch, channels, y.shape[2], y.shape[3])


def _fir_convolve_grouped(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip_filter, gain):
    """`_fir_convolve` with every channel of ``x`` its own group."""
    channels = x.shape[1]
    fh, fw = (f.shape[0], f.shape[-1])
    # Convolution flips its kernel; correlation (flip_filter) must pre-flip it to cancel that.
    # conv2d correlates, conv_transpose2d convolves, hence opposite flips below.
    if upx == 1 and upy == 1:
        kernels = _depthwise_kernels(f, channels, x.dtype, x.device, flip=not flip_filter, gain=gain)
        symx, extra_x0, extra_x1 = _split_padding(px0, px1)
        symy, extra_y0, extra_y1 = _split_padding(py0, py1)
        if any((extra_x0, extra_x1, extra_y0, extra_y1)):
            x = F.pad(x, [extra_x0, extra_x1, extra_y0, extra_y1])
        if len(kernels) == 1:
            return F.conv2d(x, kernels[0], stride=(downy, downx), padding=(symy, symx), groups=channels)
        x = F.conv2d(x, kernels[0], stride=(1, downx), padding=(0, symx), groups=channels)
        return F.conv2d(x, kernels[1], stride=(downy, 1), padding=(symy, 0), groups=channels)

    # Zero insertion + full convolution == transposed convolution with stride `up`; its output
    # has (in - 1) * up + taps samples, and output pixel n of upfirdn2d is its sample
    # n + taps - 1 - pad0. So the wanted window is that output padded by
    # (pad0 - taps + 1, pad1 + up - taps), negative values cropping.
    kernels = _depthwise_kernels(f, channels, x.dtype, x.device, flip=flip_filter, gain=gain)
    win_x0, win_x1 = px0 - fw + 1, px1 + upx - fw
    win_y0, win_y1 = py0 - fh + 1, py1 + upy - fh
    # Cropping both sides is free inside conv_transpose2d (its `padding` argument).
    crop_x = max(min(-win_x0, -win_x1), 0)
    crop_y = max(min(-win_y0, -win_y1), 0)
    if len(kernels) == 1:
        x = F.conv_transpose2d(x, kernels[0], stride=(upy, upx), padding=(crop_y, crop_x), groups=channels)
    else:
        x = F.conv_transpose2d(x, kernels[0], stride=(1, upx), padding=(0, crop_x), groups=channels)
        x = F.conv_transpose2d(x, kernels[1], stride=(upy, 1), padding=(crop_y, 0), groups=channels)
    pads = [win_x0 + crop_x, win_x1 + crop_x, win_y0 + crop_y, win_y1 + crop_y]
    if any(pads):
        x = F.pad(x, pads)
    if downx > 1 or downy > 1:
        x = x[:, :, ::downy, ::downx]
    return x


class _FIRResample(torch.autograd.Function):
    """upfirdn2d as a linear map of ``x`` whose backward is its adjoint, again an upfirdn2d.

    The adjoint of (zero-insert by u, pad, convolve, keep every d-th) is (zero-insert by d,
    pad, correlate, keep every u-th) with the roles of up/down swapped and the filter flipped;
    the padding follows from matching sample positions (pad0' = taps - 1 - pad0, and pad1' makes
    the result exactly the input's size). Because the backward is this same Function, gradients
    of every order stay cheap depthwise convolutions instead of PyTorch's generic convolution
    double-backward, which loops over the channel groups of a depthwise kernel on CPU.
    """

    @staticmethod
    def forward(ctx, x, f, params, allow_channels_last):
        ctx.save_for_backward(f)
        ctx.params = params
        ctx.in_hw = (x.shape[2], x.shape[3])
        return _fir_convolve(x, f, params, allow_channels_last)

    @staticmethod
    def backward(ctx, grad):
        (f,) = ctx.saved_tensors
        upx, upy, downx, downy, px0, _, py0, _, flip_filter, gain = ctx.params
        in_h, in_w = ctx.in_hw
        out_h, out_w = grad.shape[2], grad.shape[3]
        fh, fw = f.shape[0], f.shape[-1]
        adjoint = (
            downx, downy, upx, upy,
            fw - 1 - px0, in_w * upx - out_w * downx + px0 - upx + 1,
            fh - 1 - py0, in_h * upy - out_h * downy + py0 - upy + 1,
            not flip_filter, gain,
        )
        # Gradients may come back in any layout, so let the adjoint use the fastest one.
        return _FIRResample.apply(grad, f, adjoint, True), None, None, None


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Pad, up-sample, FIR-filter and down-sample ``x`` of shape ``[N, C, H, W]``.

    ``f``: filter from `setup_filter` (``[taps]`` separable, ``[fh, fw]``, or ``None``).
    ``up``/``down``: int or ``[x, y]``. ``padding``: int, ``[x, y]`` or ``[x0, x1, y0, y1]``
    on the up-sampled image, negative crops. ``flip_filter=False`` convolves, ``True``
    correlates. ``gain`` scales the signal. Output: ``[N, C, out_h, out_w]`` with
    ``out = (in * up + pad0 + pad1 - taps) // down + 1`` per axis, dtype and device of ``x``.
    Differentiable to any order in ``x``; a filter that requires grad is differentiated too.
    """
    if impl not in _IMPLS:
        raise ValueError(f"upfirdn2d impl must be 'ref' or 'cuda', got {impl!r}.")
    return _upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)


def _upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, allow_channels_last=False):
    """`upfirdn2d`; ``allow_channels_last`` lets an NCHW input give a channels-last result."""
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError('upfirdn2d expects a 4-D [batch, channels, height, width] tensor.')
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    in_h, in_w = x.shape[2], x.shape[3]
    if in_h * upy + py0 + py1 < fh or in_w * upx + px0 + px1 < fw:
        raise ValueError(f'upfirdn2d: the padded image ({in_h}x{in_w} up {upy}x{upx}, padding '
                         f'{[px0, px1, py0, py1]}) is smaller than the {fh}x{fw} filter.')

    if f is None:
        # Identity filter: only zero insertion, padding and striding remain.
        if upx > 1 or upy > 1:
            f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
        else:
            y = F.pad(x, [px0, px1, py0, py1]) if any((px0, px1, py0, py1)) else x
            y = y[:, :, ::downy, ::downx] if (downx > 1 or downy > 1) else y
            return y * gain if gain != 1 else y

    params = (upx, upy, downx, downy, px0, px1, py0, py1, bool(flip_filter), float(gain))
    if f.requires_grad:
        return _fir_convolve(x, f, params, allow_channels_last, differentiable_filter=True)
    return _FIRResample.apply(x, f, params, allow_channels_last)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """FIR-filter ``x`` keeping its size; ``padding`` (w.r.t. the output) is added on top."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    # An even-length filter has no centre tap; the extra pixel of padding goes before.
    pad = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Up-sample ``x`` by ``up`` with FIR filter ``f``: output is exactly ``up`` times larger.

    The signal gain ``up**2`` (``upx * upy``) compensates for the inserted zeros, so a
    constant image keeps its value away from the borders. ``padding`` is w.r.t. the output.
    """
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    return upfirdn2d(x, f, up=up, padding=pad, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Down-sample ``x`` by ``down`` with FIR filter ``f``: output is ``in // down`` in size
    (for sizes divisible by ``down``). ``padding`` is w.r.t. the input.
    """
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    pad = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=pad, flip_filter=flip_filter, gain=gain, impl=impl)

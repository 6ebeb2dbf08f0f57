"""Specification of torch_utils.ops: the StyleGAN2-ADA resampling / activation primitives.

Every fast path is compared against a direct, deliberately naive computation written here
(explicit zero insertion, padding, a loop over filter taps, striding), in float64.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from torch_utils.ops import bias_act, conv2d_gradfix, conv2d_resample, fma, grid_sample_gradfix, upfirdn2d

# ----------------------------------------------------------------------------------------------
# Direct references.


def direct_upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Zero-insert, pad/crop, full 2-D convolution by a loop over taps, then stride."""
    upx, upy = (up, up) if isinstance(up, int) else up
    downx, downy = (down, down) if isinstance(down, int) else down
    if isinstance(padding, int):
        padding = [padding, padding]
    if len(padding) == 2:
        padding = [padding[0], padding[0], padding[1], padding[1]]
    px0, px1, py0, py1 = padding
    f = torch.ones([1, 1]) if f is None else f
    f = f.to(torch.float64)
    if f.ndim == 1:
        f = torch.outer(f, f)  # separable filter = its outer product, applied once
    f = f * gain
    n, c, h, w = x.shape
    upsampled = torch.zeros([n, c, h * upy, w * upx], dtype=x.dtype)
    upsampled[:, :, ::upy, ::upx] = x
    padded_h, padded_w = h * upy + py0 + py1, w * upx + px0 + px1
    padded = torch.zeros([n, c, padded_h, padded_w], dtype=x.dtype)
    for i in range(padded_h):
        for j in range(padded_w):
            si, sj = i - py0, j - px0
            if 0 <= si < h * upy and 0 <= sj < w * upx:
                padded[:, :, i, j] = upsampled[:, :, si, sj]
    fh, fw = f.shape
    # Convolution == correlation with the flipped kernel.
    kernel = f if flip_filter else f.flip([0, 1])
    out_h, out_w = padded_h - fh + 1, padded_w - fw + 1
    out = torch.zeros([n, c, out_h, out_w], dtype=x.dtype)
    for a in range(fh):
        for b in range(fw):
            out += padded[:, :, a:a + out_h, b:b + out_w] * kernel[a, b]
    return out[:, :, ::downy, ::downx]


def direct_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter):
    """The documented semantics, step by step: up-sample (filter, gain up^2) + pad, plain
    convolution, then filter + down-sample."""
    fw, fh = upfirdn2d._get_filter_size(f)
    px0, px1, py0, py1 = upfirdn2d._parse_padding(padding)
    if up > 1:
        px0, px1, py0, py1 = px0 + (fw + up - 1) // 2, px1 + (fw - up) // 2, py0 + (fh + up - 1) // 2, py1 + (fh - up) // 2
    if down > 1:
        px0, px1 = px0 + (fw - down + 1) // 2, px1 + (fw - down) // 2
        py0, py1 = py0 + (fh - down + 1) // 2, py1 + (fh - down) // 2
    y = direct_upfirdn2d(x, f if up > 1 else None, up=up, padding=[px0, px1, py0, py1], gain=up ** 2,
                         flip_filter=flip_filter)
    y = F.conv2d(y, w if flip_weight else w.flip([2, 3]), groups=groups)
    if down > 1:
        y = direct_upfirdn2d(y, f, down=down, flip_filter=flip_filter)
    return y


def formula_bias_act(x, b, act, alpha, gain, clamp):
    t = x + b.reshape(1, -1, 1, 1)
    act_fn = {
        'linear': lambda v: v,
        'relu': lambda v: torch.where(v > 0, v, torch.zeros_like(v)),
        'lrelu': lambda v: torch.where(v > 0, v, v * alpha),
        'tanh': lambda v: (torch.exp(v) - torch.exp(-v)) / (torch.exp(v) + torch.exp(-v)),
        'sigmoid': lambda v: 1 / (1 + torch.exp(-v)),
        'elu': lambda v: torch.where(v > 0, v, torch.exp(v) - 1),
        'selu': lambda v: 1.0507009873554805 * torch.where(v > 0, v, 1.6732632423543772 * (torch.exp(v) - 1)),
        'softplus': lambda v: torch.log1p(torch.exp(v)),
        'swish': lambda v: v / (1 + torch.exp(-v)),
    }[act]
    y = act_fn(t) * gain
    return y if clamp is None else torch.minimum(torch.maximum(y, torch.tensor(-clamp, dtype=y.dtype)),
                                                 torch.tensor(clamp, dtype=y.dtype))


def rand(*shape, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


FIR_1331 = upfirdn2d.setup_filter([1, 3, 3, 1])  # 4x4 (short separable filters are expanded)
FIR_SEPARABLE_1D = upfirdn2d.setup_filter([1, 3, 3, 1], separable=True)  # [4]
FIR_LONG_1D = upfirdn2d.setup_filter(np.hanning(14)[1:-1])  # 12 taps, kept 1-D like ADA's sym6
FIR_NONSEPARABLE = torch.tensor([[1.0, 2.0, 0.0, -1.0, 0.5], [0.5, -1.0, 3.0, 1.0, 2.0], [2.0, 0.0, 1.0, 1.0, -0.5]])

FIRS = {'1331': FIR_1331, 'sep1d': FIR_SEPARABLE_1D, 'long1d': FIR_LONG_1D, 'nonsep': FIR_NONSEPARABLE, 'none': None}
UPFIRDN_CASES = [
    ('1331', 1, 1, 0, False, 1),
    ('1331', 1, 1, [2, 1, 1, 2], False, 1),
    ('1331', 2, 1, [2, 1, 2, 1], False, 4),
    ('1331', 1, 2, [1, 1, 1, 1], True, 1),
    ('1331', 2, 2, 1, False, 2.5),
    ('sep1d', 2, 1, [2, 1], False, 4),
    ('sep1d', 1, 2, [1, 2, 0, 3], True, 0.5),
    ('long1d', 2, 1, [6, 5, 6, 5], False, 4),
    ('long1d', 1, 2, [-2, 7, 5, -1], True, 1),
    ('nonsep', 1, 1, [3, 1, 0, 2], False, 1),
    ('nonsep', 3, 1, [1, 2, 2, 0], True, 9),
    ('nonsep', [2, 1], [1, 2], [2, 1, 0, 2], False, 1.5),
    ('nonsep', 2, 3, [-1, 2, 3, -2], False, 1),
    ('none', 2, 1, [0, 1, 1, 0], False, 1),
    ('none', 1, 2, [-1, 0, 1, 1], False, 3),
]

# ----------------------------------------------------------------------------------------------
# upfirdn2d


@pytest.mark.parametrize('f_name, up, down, padding, flip_filter, gain', UPFIRDN_CASES)
def test_upfirdn2d_matches_direct_computation(f_name, up, down, padding, flip_filter, gain):
    f = FIRS[f_name]
    x = rand(2, 3, 9, 8)
    got = upfirdn2d.upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    want = direct_upfirdn2d(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
    assert got.shape == want.shape
    assert got.dtype == x.dtype
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('f_name, up, down, padding, flip_filter, gain', UPFIRDN_CASES)
def test_upfirdn2d_gradient_matches_direct_computation(f_name, up, down, padding, flip_filter, gain):
    # The backward pass is a hand-derived adjoint (another upfirdn2d); check it everywhere.
    f = FIRS[f_name]
    x = rand(2, 3, 9, 8).requires_grad_()
    probe = None
    grads = []
    for fn in (upfirdn2d.upfirdn2d, direct_upfirdn2d):
        y = fn(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain)
        probe = rand(*y.shape, seed=7) if probe is None else probe
        (g,) = torch.autograd.grad((y * probe).sum(), [x])
        grads.append(g)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-10, atol=1e-10)


def test_upfirdn2d_filter_that_requires_grad_gets_gradient():
    x = rand(1, 2, 6, 6)
    f = FIR_NONSEPARABLE.to(torch.float64).clone().requires_grad_()
    (got,) = torch.autograd.grad(upfirdn2d.upfirdn2d(x, f, up=2, padding=1).square().sum(), [f])
    (want,) = torch.autograd.grad(direct_upfirdn2d(x, f, up=2, padding=1).square().sum(), [f])
    torch.testing.assert_close(got, want)


def test_upfirdn2d_flip_filter_distinguishes_convolution_from_correlation():
    x = rand(1, 1, 6, 6)
    f = FIR_NONSEPARABLE
    conv = upfirdn2d.upfirdn2d(x, f, flip_filter=False)
    corr = upfirdn2d.upfirdn2d(x, f, flip_filter=True)
    assert not torch.allclose(conv, corr)
    torch.testing.assert_close(corr, upfirdn2d.upfirdn2d(x, f.flip([0, 1]), flip_filter=False))


@pytest.mark.parametrize('layout', ['channels_last', 'strided_view'])
def test_upfirdn2d_other_memory_layouts_give_same_values_and_gradients(layout):
    x = rand(2, 4, 8, 8)
    other = x.contiguous(memory_format=torch.channels_last) if layout == 'channels_last' else \
        rand(2, 4, 8, 16)[..., ::2].copy_(x)
    for fn in (lambda t: upfirdn2d.upsample2d(t, FIR_1331), lambda t: upfirdn2d.downsample2d(t, FIR_LONG_1D),
               lambda t: upfirdn2d.upfirdn2d(t, FIR_NONSEPARABLE, up=2, down=[1, 2], padding=[1, 2, 0, 1])):
        a, b = x.clone().requires_grad_(), other.clone().requires_grad_()
        ya, yb = fn(a), fn(b)
        torch.testing.assert_close(yb, ya)
        ya.square().sum().backward()
        yb.square().sum().backward()
        torch.testing.assert_close(b.grad, a.grad)


@pytest.mark.parametrize('channels', [3, 32])
def test_float32_gradients_on_every_layout_path(channels):
    # float32 with >= 16 channels takes the internal channels-last route on CPU; 3 channels
    # fold the batch. Broadcast gradients (from .sum()) have zero strides: they must work too.
    x = rand(2, channels, 6, 6, dtype=torch.float32).requires_grad_()
    w = rand(channels, channels, 3, 3, seed=1, dtype=torch.float32).requires_grad_()
    xd, wd = x.detach().double().requires_grad_(), w.detach().double().requires_grad_()
    upfirdn2d.upsample2d(x, FIR_1331).sum().backward()
    direct_upfirdn2d(xd, FIR_1331, up=2, padding=[2, 1, 2, 1], gain=4).sum().backward()
    torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-5, atol=1e-5)
    for up, down in [(2, 1), (1, 2)]:
        x.grad = w.grad = xd.grad = wd.grad = None
        probe = rand(2, channels, 6 * up // down, 6 * up // down, seed=2)
        out = conv2d_resample.conv2d_resample(x, w, f=FIR_1331, up=up, down=down, padding=1)
        (out.double() * probe).sum().backward()
        (direct_conv2d_resample(xd, wd, FIR_1331, up, down, 1, 1, True, False) * probe).sum().backward()
        torch.testing.assert_close(x.grad.double(), xd.grad, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(w.grad.double(), wd.grad, rtol=1e-4, atol=1e-4)


def test_setup_filter_normalises_expands_and_scales():
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert f.shape == (4, 4) and f.dtype == torch.float32
    torch.testing.assert_close(f, torch.outer(torch.tensor([1., 3, 3, 1]), torch.tensor([1., 3, 3, 1])) / 64)
    assert upfirdn2d.setup_filter(list(range(1, 13))).shape == (12,)  # >= 8 taps stays separable
    assert upfirdn2d.setup_filter([1, 2, 1], separable=True).shape == (3,)
    assert upfirdn2d.setup_filter(None).tolist() == [[1.0]]
    assert math.isclose(float(upfirdn2d.setup_filter([1, 3, 3, 1], gain=4).sum()), 4.0, rel_tol=1e-6)
    # A 1-D filter is applied along both axes, so each pass carries sqrt(gain).
    assert math.isclose(float(upfirdn2d.setup_filter([1, 3, 3, 1], gain=4, separable=True).sum()), 2.0, rel_tol=1e-6)
    torch.testing.assert_close(upfirdn2d.setup_filter([1, 2, 4], flip_filter=True, separable=True),
                               torch.tensor([4., 2, 1]) / 7)
    assert float(upfirdn2d.setup_filter([1, 1], normalize=False).sum()) == 4.0


@pytest.mark.parametrize('f', [FIR_1331, FIR_LONG_1D], ids=['1331', 'long1d'])
def test_resampling_helpers_keep_documented_sizes_and_constant_interior(f):
    x = torch.full([1, 2, 16, 16], 0.75, dtype=torch.float64)
    taps = f.shape[0]
    up = upfirdn2d.upsample2d(x, f)
    down = upfirdn2d.downsample2d(x, f)
    same = upfirdn2d.filter2d(x, f)
    assert up.shape == (1, 2, 32, 32)
    assert down.shape == (1, 2, 8, 8)
    assert same.shape == (1, 2, 16, 16)
    margin = taps  # border pixels see the zero padding
    torch.testing.assert_close(up[..., margin:-margin, margin:-margin], torch.full_like(up, 0.75)[..., margin:-margin, margin:-margin])
    dm = (taps + 1) // 2
    torch.testing.assert_close(down[..., dm:-dm, dm:-dm], torch.full_like(down, 0.75)[..., dm:-dm, dm:-dm])
    torch.testing.assert_close(same[..., margin:-margin, margin:-margin], torch.full_like(same, 0.75)[..., margin:-margin, margin:-margin])
    # Zero padding makes the borders darker: proves the margin is actually needed.
    assert float(up[0, 0, 0, 0]) < 0.75


def test_resampling_helpers_extra_padding_changes_size():
    x = rand(1, 1, 8, 8)
    assert upfirdn2d.upsample2d(x, FIR_1331, padding=1).shape == (1, 1, 18, 18)
    assert upfirdn2d.downsample2d(x, FIR_1331, padding=[2, 2, 0, 0]).shape == (1, 1, 4, 6)
    assert upfirdn2d.filter2d(x, FIR_1331, padding=-1).shape == (1, 1, 6, 6)
    assert upfirdn2d.upsample2d(x, FIR_1331, up=[2, 1]).shape == (1, 1, 8, 16)


def test_upfirdn2d_rejects_bad_arguments_with_clear_errors():
    x = rand(1, 1, 4, 4)
    with pytest.raises(ValueError, match='impl'):
        upfirdn2d.upfirdn2d(x, FIR_1331, impl='triton')
    with pytest.raises(ValueError, match='smaller than'):
        upfirdn2d.upfirdn2d(x, FIR_1331, padding=-2)
    with pytest.raises(ValueError, match='4-D'):
        upfirdn2d.upfirdn2d(x[0], FIR_1331)


# ----------------------------------------------------------------------------------------------
# conv2d_resample


@pytest.mark.parametrize('up, down, kernel, padding, groups, flip_weight, flip_filter', [
    (2, 1, 3, 1, 1, True, False),
    (2, 1, 3, 1, 1, False, False),
    (2, 1, 3, [0, 2, 1, 1], 2, False, True),
    (2, 1, 1, 0, 1, True, False),
    (2, 2, 3, 1, 1, True, False),
    (1, 2, 3, 1, 1, True, False),
    (1, 2, 3, 1, 2, False, True),
    (1, 2, 1, 0, 1, True, False),
    (1, 2, 3, [2, 0, 1, 1], 1, True, False),
    (1, 1, 3, 1, 1, True, False),
    (1, 1, 3, 1, 2, False, False),
    (1, 1, 3, [2, 0, 1, -1], 1, True, False),
    (1, 1, 1, 0, 4, True, False),
])
def test_conv2d_resample_and_its_gradients_match_direct_computation(up, down, kernel, padding, groups, flip_weight, flip_filter):
    x = rand(2, 4, 8, 8, seed=1).requires_grad_()
    w = rand(6 if groups != 4 else 8, 4 // groups, kernel, kernel, seed=2).requires_grad_()
    f = FIR_1331.to(torch.float64)
    got = conv2d_resample.conv2d_resample(x, w, f=f, up=up, down=down, padding=padding, groups=groups,
                                          flip_weight=flip_weight, flip_filter=flip_filter)
    want = direct_conv2d_resample(x, w, f, up, down, padding, groups, flip_weight, flip_filter)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
    probe = rand(*want.shape, seed=3)
    got_grads = torch.autograd.grad((got * probe).sum(), [x, w])
    want_grads = torch.autograd.grad((want * probe).sum(), [x, w])
    for g, r in zip(got_grads, want_grads):
        torch.testing.assert_close(g, r, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize('up, down', [(2, 1), (1, 2), (1, 1)])
def test_conv2d_resample_same_values_in_channels_last_and_keeps_input_layout(up, down):
    # float32: the dtype for which the up path switches to channels-last internally.
    x = rand(2, 4, 8, 8, seed=1, dtype=torch.float32)
    w = rand(6, 4, 3, 3, seed=2, dtype=torch.float32)
    want = direct_conv2d_resample(x.double(), w.double(), FIR_1331, up, down, 1, 1, True, False)
    nchw = conv2d_resample.conv2d_resample(x, w, f=FIR_1331, up=up, down=down, padding=1)
    cl = conv2d_resample.conv2d_resample(x.contiguous(memory_format=torch.channels_last), w, f=FIR_1331,
                                         up=up, down=down, padding=1)
    torch.testing.assert_close(nchw.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(cl.double(), want, rtol=1e-5, atol=1e-5)
    assert nchw.is_contiguous()  # NCHW in, NCHW out (callers may .view() it)


def test_conv2d_resample_flip_weight_matters_and_sizes_follow_stylegan():
    x = rand(1, 3, 8, 8)
    w = rand(5, 3, 3, 3, seed=3)
    corr = conv2d_resample.conv2d_resample(x, w, padding=1)
    torch.testing.assert_close(corr, F.conv2d(x, w, padding=1))
    assert not torch.allclose(corr, conv2d_resample.conv2d_resample(x, w, padding=1, flip_weight=False))
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    assert conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1).shape == (1, 5, 16, 16)
    assert conv2d_resample.conv2d_resample(x, w, f=f, down=2, padding=1).shape == (1, 5, 4, 4)


def test_conv2d_resample_accepts_float32_filter_with_float64_input():
    x = rand(1, 2, 6, 6)
    w = rand(2, 2, 3, 3, seed=4)
    out = conv2d_resample.conv2d_resample(x, w, f=FIR_1331, up=2, padding=1)
    assert out.dtype == torch.float64


# ----------------------------------------------------------------------------------------------
# bias_act


ALL_ACTIVATIONS = ['linear', 'relu', 'lrelu', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus', 'swish']


def test_activation_defaults_match_stylegan2():
    funcs = bias_act.activation_funcs
    assert set(funcs) == set(ALL_ACTIVATIONS)
    for name in ['relu', 'lrelu', 'swish']:
        assert math.isclose(funcs[name].def_gain, math.sqrt(2))
    for name in ['linear', 'tanh', 'sigmoid', 'elu', 'selu', 'softplus']:
        assert funcs[name].def_gain == 1
    assert funcs['lrelu'].def_alpha == 0.2
    assert funcs['lrelu']['def_alpha'] == 0.2  # also dict-style, like EasyDict
    assert funcs['lrelu'].ref == 'y' and funcs['swish'].ref == 'x' and funcs['tanh'].has_2nd_grad


@pytest.mark.parametrize('act', ALL_ACTIVATIONS)
@pytest.mark.parametrize('alpha, gain, clamp', [(None, None, None), (0.1, 1.7, None), (None, 2.0, 0.8)])
def test_bias_act_matches_formula(act, alpha, gain, clamp):
    x = rand(3, 5, 4, 4) * 2
    b = rand(5, seed=1)
    spec = bias_act.activation_funcs[act]
    got = bias_act.bias_act(x, b, act=act, alpha=alpha, gain=gain, clamp=clamp)
    want = formula_bias_act(x, b, act, spec.def_alpha if alpha is None else alpha,
                            spec.def_gain if gain is None else gain, clamp)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)
    if clamp is not None:
        assert float(got.abs().max()) <= clamp


def test_bias_act_default_lrelu_values():
    x = torch.tensor([[-1.0, 0.5]], dtype=torch.float64)
    y = bias_act.bias_act(x, torch.tensor([0.0, 0.5], dtype=torch.float64), act='lrelu')
    torch.testing.assert_close(y, torch.tensor([[-0.2 * math.sqrt(2), math.sqrt(2)]], dtype=torch.float64))


def test_bias_act_bias_along_other_dim_and_no_bias():
    x = rand(2, 3, 4)
    b = rand(4, seed=5)
    torch.testing.assert_close(bias_act.bias_act(x, b, dim=2, act='relu', gain=1), torch.relu(x + b))
    torch.testing.assert_close(bias_act.bias_act(x, act='tanh'), torch.tanh(x))
    assert bias_act.bias_act(x) is x  # nothing to do: linear, no bias, gain 1


@pytest.mark.parametrize('act, clamp', [('lrelu', None), ('lrelu', 1.0), ('relu', 0.7), ('linear', 0.5),
                                        ('linear', None), ('swish', 1.0)])
def test_bias_act_first_and_second_gradients_match_reference(act, clamp):
    x = (rand(2, 3, 5, 5) * 2).requires_grad_()
    b = rand(3, seed=1).requires_grad_()
    probe = rand(2, 3, 5, 5, seed=2)

    def grads(fn):
        y = fn(x, b)
        gx, gb = torch.autograd.grad((y * probe).sum(), [x, b], create_graph=True)
        second = torch.autograd.grad((gx.square().sum() + gb.square().sum()), [probe_param], allow_unused=True)
        return y, gx, gb, second

    # Make the probe a parameter of the first-order gradient so the second derivative is non-trivial.
    probe_param = torch.ones([], dtype=torch.float64, requires_grad=True)
    fast = lambda x, b: bias_act.bias_act(x * probe_param, b, act=act, clamp=clamp)
    spec = bias_act.activation_funcs[act]
    slow = lambda x, b: formula_bias_act(x * probe_param, b, act, spec.def_alpha, spec.def_gain, clamp)
    for got, want in zip(grads(fast), grads(slow)):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_bias_act_linear_result_may_be_modified_in_place():
    # Official resnet blocks do `y.add_(x)` on the linear skip output, then backpropagate.
    x = rand(2, 3, 4, 4).requires_grad_()
    y = bias_act.bias_act(x, None, act='linear', gain=0.5)
    y.add_(1.0)
    y.sum().backward()
    torch.testing.assert_close(x.grad, torch.full_like(x, 0.5))


def test_bias_act_rejects_unknown_activation_and_bad_bias():
    with pytest.raises(ValueError, match='Unknown activation'):
        bias_act.bias_act(torch.zeros(2, 2), act='gelu')
    with pytest.raises(ValueError, match='does not match'):
        bias_act.bias_act(torch.zeros(2, 3), torch.zeros(2))


# ----------------------------------------------------------------------------------------------
# fma, conv2d_gradfix, grid_sample_gradfix


def test_fma_broadcasts_and_is_twice_differentiable():
    a = rand(2, 3, 4, 4).requires_grad_()
    b = rand(2, 3, 1, 1, seed=1).requires_grad_()
    c = rand(1, 1, 4, 4, seed=2).requires_grad_()
    torch.testing.assert_close(fma.fma(a, b, c), a * b + c)
    assert torch.autograd.gradgradcheck(fma.fma, (a, b, c))


def test_conv2d_gradfix_is_plain_convolution():
    x = rand(2, 4, 6, 6)
    w = rand(6, 2, 3, 3, seed=1)
    bias = rand(6, seed=2)
    torch.testing.assert_close(conv2d_gradfix.conv2d(x, w, bias, stride=2, padding=1, groups=2),
                               F.conv2d(x, w, bias, stride=2, padding=1, groups=2))
    wt = rand(4, 3, 3, 3, seed=3)
    torch.testing.assert_close(conv2d_gradfix.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1),
                               F.conv_transpose2d(x, wt, stride=2, padding=1, output_padding=1))


def test_no_weight_gradients_sets_and_restores_flag_and_r1_still_works():
    x = rand(2, 2, 6, 6).requires_grad_()
    w = rand(3, 2, 3, 3, seed=1).requires_grad_()
    assert conv2d_gradfix.weight_gradients_disabled is False
    with pytest.raises(RuntimeError), conv2d_gradfix.no_weight_gradients():
        assert conv2d_gradfix.weight_gradients_disabled is True
        raise RuntimeError('boom')
    assert conv2d_gradfix.weight_gradients_disabled is False
    # R1 pattern: input gradient inside the context, then its penalty reaches the weights,
    # with the same values as without the context.
    def r1_weight_gradient(use_context):
        w.grad = None
        out = conv2d_gradfix.conv2d(x, w, padding=1)
        with conv2d_gradfix.no_weight_gradients(use_context):
            (grad_x,) = torch.autograd.grad(out.square().sum(), [x], create_graph=True)
        grad_x.square().sum().backward()
        return w.grad.clone()

    with_context = r1_weight_gradient(True)
    assert float(with_context.abs().sum()) > 0
    torch.testing.assert_close(with_context, r1_weight_gradient(False))


def test_grid_sample_identity_grid_and_zero_padding():
    x = rand(1, 2, 5, 7)
    theta = torch.tensor([[[1.0, 0, 0], [0, 1.0, 0]]], dtype=torch.float64)
    grid = F.affine_grid(theta, [1, 2, 5, 7], align_corners=False)
    torch.testing.assert_close(grid_sample_gradfix.grid_sample(x, grid), x)
    far = torch.full([1, 1, 1, 2], 3.0, dtype=torch.float64)  # outside the image: zeros padding
    assert float(grid_sample_gradfix.grid_sample(x, far).abs().sum()) == 0.0


def test_keyword_interface_used_by_official_network_pickles():
    # Pickled StyleGAN2-ADA networks carry source that calls these names with these keywords.
    x = rand(2, 4, 8, 8, dtype=torch.float32)
    w = rand(4, 4, 3, 3, seed=1, dtype=torch.float32)
    f = upfirdn2d.setup_filter([1, 3, 3, 1], device=torch.device('cpu'), normalize=True, flip_filter=False,
                               gain=1, separable=None)
    styles = rand(2, 4, seed=2, dtype=torch.float32)
    fused = conv2d_resample.conv2d_resample(x=x.reshape(1, -1, 8, 8), w=(w[None] * styles[:, None, :, None, None])
                                            .reshape(-1, 4, 3, 3), f=f, up=2, down=1, padding=1, groups=2,
                                            flip_weight=False, flip_filter=False)
    separate = conv2d_resample.conv2d_resample(x=x * styles[:, :, None, None], w=w, f=f, up=2, padding=1,
                                               flip_weight=False)
    torch.testing.assert_close(fused.reshape(2, 4, 16, 16), separate, rtol=1e-5, atol=1e-5)
    y = bias_act.bias_act(x=separate, b=rand(4, dtype=torch.float32), dim=1, act='lrelu', alpha=None,
                          gain=bias_act.activation_funcs['lrelu'].def_gain * 1.0, clamp=256, impl='cuda')
    y = fma.fma(a=y, b=styles[:, :, None, None], c=y)
    img = upfirdn2d.upsample2d(x=x[:, :3], f=f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda')
    img = upfirdn2d.downsample2d(x=img, f=upfirdn2d.setup_filter(list(range(1, 13))), down=2, padding=-2,
                                 flip_filter=True)
    assert img.shape == (2, 3, 6, 6)  # 16 / 2 = 8, less the 2 input pixels cropped per side
    img = upfirdn2d.filter2d(x=img, f=f, padding=0, flip_filter=False, gain=1, impl='ref')
    img = conv2d_gradfix.conv2d(input=img, weight=torch.ones(3, 1, 1, 3) / 3, groups=3)
    grid = F.affine_grid(torch.eye(2, 3)[None].repeat(2, 1, 1), [2, 3, 8, 8], align_corners=False)
    img = grid_sample_gradfix.grid_sample(img, grid)
    assert y.shape == (2, 4, 16, 16) and img.shape == (2, 3, 8, 8)
    assert upfirdn2d._parse_padding(3) == (3, 3, 3, 3) and upfirdn2d._parse_padding([1, 2]) == (1, 1, 2, 2)
    assert upfirdn2d._get_filter_size(f) == (4, 4) and upfirdn2d._get_filter_size(None) == (1, 1)
    assert upfirdn2d._parse_scaling([2, 3]) == (2, 3)
    conv2d_gradfix.enabled = True  # official training code flips these switches; harmless here
    grid_sample_gradfix.enabled = True
    conv2d_gradfix.enabled = grid_sample_gradfix.enabled = False


# ----------------------------------------------------------------------------------------------
# Gradients of gradients (R1 and path-length regularisers) in float64.


def test_gradcheck_upfirdn2d():
    x = rand(1, 2, 5, 5).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: upfirdn2d.upsample2d(t, FIR_1331), (x,))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d.upsample2d(t, FIR_1331), (x,))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d.downsample2d(t, FIR_NONSEPARABLE, padding=1), (x,))
    assert torch.autograd.gradgradcheck(lambda t: upfirdn2d.upfirdn2d(t, FIR_LONG_1D, up=2, padding=5), (x,))


@pytest.mark.parametrize('up, down', [(2, 1), (1, 2), (1, 1)])
def test_gradcheck_conv2d_resample(up, down):
    x = rand(1, 2, 5, 5).requires_grad_()
    w = rand(3, 2, 3, 3, seed=1).requires_grad_()

    def fn(x, w):
        return conv2d_resample.conv2d_resample(x, w, f=FIR_1331, up=up, down=down, padding=1, flip_weight=(up == 1))

    assert torch.autograd.gradcheck(fn, (x, w))
    assert torch.autograd.gradgradcheck(fn, (x, w))


def test_gradcheck_bias_act_lrelu_with_clamp():
    x = (rand(2, 3, 3, 3) * 2).requires_grad_()
    b = rand(3, seed=1).requires_grad_()
    assert torch.autograd.gradcheck(lambda x, b: bias_act.bias_act(x, b, act='lrelu', clamp=1.5), (x, b))
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act.bias_act(x, b, act='lrelu', clamp=1.5), (x, b))
    assert torch.autograd.gradgradcheck(lambda x, b: bias_act.bias_act(x, b, act='swish'), (x, b))


def test_gradcheck_grid_sample():
    x = rand(1, 2, 4, 4).requires_grad_()
    grid = (torch.rand(1, 3, 3, 2, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.8 - 0.9)
    grid.requires_grad_()
    assert torch.autograd.gradcheck(grid_sample_gradfix.grid_sample, (x, grid))
    assert torch.autograd.gradgradcheck(grid_sample_gradfix.grid_sample, (x, grid))


# ----------------------------------------------------------------------------------------------
# Reduced precision.


@pytest.mark.parametrize('dtype, tol', [(torch.bfloat16, 3e-2), (torch.float16, 4e-3)])
def test_low_precision_matches_float32_and_keeps_dtype(dtype, tol):
    x = rand(2, 8, 8, 8, dtype=torch.float32)
    w = rand(8, 8, 3, 3, seed=1, dtype=torch.float32) / 8
    b = rand(8, seed=2, dtype=torch.float32)
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    cases = {
        'upsample2d': lambda x, w, b: upfirdn2d.upsample2d(x, f),
        'downsample2d': lambda x, w, b: upfirdn2d.downsample2d(x, f),
        'conv_up': lambda x, w, b: conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1),
        'conv_down': lambda x, w, b: conv2d_resample.conv2d_resample(x, w, f=f, down=2, padding=1),
        'bias_act': lambda x, w, b: bias_act.bias_act(x, b, act='lrelu', clamp=256),
        'fma': lambda x, w, b: fma.fma(x, b.to(x.dtype).reshape(1, -1, 1, 1), x),
    }
    for name, fn in cases.items():
        want = fn(x, w, b)
        got = fn(x.to(dtype), w.to(dtype), b)  # the float32 bias is cast to x's dtype
        assert got.dtype == dtype, name
        scale = float(want.abs().max())
        assert float((got.float() - want).abs().max()) <= tol * scale, name


def test_autocast_bfloat16_runs_convolutions_in_bfloat16():
    x = rand(2, 8, 8, 8, dtype=torch.float32)
    w = rand(8, 8, 3, 3, seed=1, dtype=torch.float32) / 8
    f = upfirdn2d.setup_filter([1, 3, 3, 1])
    want = conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1)
    with torch.autocast('cpu', dtype=torch.bfloat16):
        got = conv2d_resample.conv2d_resample(x, w, f=f, up=2, padding=1)
        down = conv2d_resample.conv2d_resample(x, w, f=f, down=2, padding=1)
    assert got.dtype == torch.bfloat16 and down.dtype == torch.bfloat16
    assert float((got.float() - want).abs().max()) <= 3e-2 * float(want.abs().max())

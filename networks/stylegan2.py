"""StyleGAN2 generator and discriminator (config-f / "auto" networks of StyleGAN2-ADA).

Same architecture, parameter names, initialisation and forward semantics as the networks of
NVlabs/stylegan2-ada-pytorch, written independently, so state dicts and pickles are interchangeable.
Every class is persistent: a pickle carries this file's source, and that source only uses names
that also exist in the official `torch_utils` / `dnnlib`, so our snapshots load in the official code.

Precision policy
----------------
* fp16 (StyleGAN2-ADA mixed precision): blocks at the `num_fp16_res` highest resolutions run in
  float16 **on CUDA only**; on other devices they silently run in float32, because CPU float16
  convolutions are slow or missing. Use `conv_clamp=256` with fp16, as the official configs do.
* bf16 autocast (`torch.autocast(device_type, dtype=torch.bfloat16)`): convolutions run in bf16,
  while these parts are forced to float32 because bf16 keeps only 8 significant bits:
  - FullyConnectedLayer (hence the mapping network, the style affines and the D epilogue's fc):
    they are tiny, and the mapping network's 8 layers at lr_multiplier 0.01, the `w_avg` EMA
    (beta 0.995 -- a bf16 update of 0.5% would round to nothing) and truncation need the precision.
  - modulation/demodulation coefficients: a sum of in_channels*k*k squared weights feeds an rsqrt,
    and a 0.4% relative error there rescales every output channel of every layer.
  - the RGB skip image of the synthesis network: it is a running sum over all resolutions.
  - the discriminator epilogue: minibatch-stddev subtracts nearly equal numbers, and the logits
    feed the loss and R1 directly.
"""

import contextlib

import numpy as np
import torch

import dnnlib.util
from torch_utils import misc, persistence
from torch_utils.ops import bias_act, conv2d_resample, fma, upfirdn2d


class NetworkConfigError(ValueError):
    """Raised for an invalid network option; the message names the option and the valid values."""


ARCHITECTURES = ('orig', 'skip', 'resnet')
NOISE_MODES = ('random', 'const', 'none')
SKIP_GAIN = float(np.sqrt(0.5))  # resnet blocks: skip and residual each scaled by sqrt(1/2)


def _check_choice(name, value, choices):
    if value not in choices:
        raise NetworkConfigError(f'{name}={value!r} is not supported; use one of {", ".join(choices)}.')


def _check_resolution(img_resolution, minimum):
    if img_resolution < minimum or img_resolution & (img_resolution - 1):
        raise NetworkConfigError(f'img_resolution={img_resolution} must be a power of two >= {minimum}; '
                                 'resize the images (e.g. to 64 or 256).')


def _full_precision(device):
    """Context in which autocast is off, so ops run at the dtype of their inputs."""
    if device.type in ('cpu', 'cuda') and hasattr(torch, 'autocast'):
        return torch.autocast(device_type=device.type, enabled=False)
    return contextlib.nullcontext()


def _random_weight(out_channels, in_channels, kernel_size, channels_last):
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return torch.randn([out_channels, in_channels, kernel_size, kernel_size]).to(memory_format=memory_format)


def _block_dtype(use_fp16, force_fp32, device):
    return torch.float16 if use_fp16 and not force_fp32 and device.type == 'cuda' else torch.float32


def _activation_memory_format(channels_last, dtype, device):
    """Layout of a block's activations. On CPU always channels-last: oneDNN's convolutions run
    natively in it (8x64x64x64 3x3 fp32 forward 39 -> 22 ms on one core) and every NCHW tensor
    would otherwise be reordered on each convolution and FIR filter, forward and backward. On
    CUDA, the official rule (channels-last only for fp16 blocks that ask for it)."""
    if device.type == 'cpu' or (channels_last and dtype == torch.float16):
        return torch.channels_last
    return torch.contiguous_format


def _to_layout(x, dtype, memory_format):
    """``x.to(dtype, memory_format)``; a one-channel image becomes an unambiguous channels-last
    view, since its NCHW strides also pass as channels-last and convolutions would then pick NCHW."""
    x = x.to(dtype=dtype, memory_format=memory_format)
    if memory_format == torch.channels_last and x.shape[1] == 1 and x.stride(1) != 1:
        batch, _, height, width = x.shape
        x = x.reshape(batch, height, width, 1).permute(0, 3, 1, 2)
    return x


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


@misc.profiled_function
def modulated_conv2d(x, weight, styles, noise=None, up=1, down=1, padding=0, resample_filter=None,
                     demodulate=True, flip_weight=True, fused_modconv=True):
    """Convolution whose weights are scaled per sample by `styles` [N, I] and, with `demodulate`,
    renormalised so each output channel has unit expected variance (StyleGAN2 eq. 3).

    fused: one grouped convolution with per-sample weights (groups = batch). Not fused: scale the
    activations before and after a shared-weight convolution -- mathematically the same.
    """
    batch_size = x.shape[0]
    out_channels, in_channels, kh, kw = weight.shape
    misc.assert_shape(weight, [out_channels, in_channels, kh, kw])
    misc.assert_shape(x, [batch_size, in_channels, None, None])
    misc.assert_shape(styles, [batch_size, in_channels])

    with _full_precision(x.device):
        weight = weight.to(torch.float32)
        styles = styles.to(torch.float32)
        if x.dtype == torch.float16 and demodulate:
            # Demodulation cancels any per-sample scale, so shrink both factors into fp16 range first.
            weight = weight * (1 / np.sqrt(in_channels * kh * kw)
                               / weight.norm(float('inf'), dim=[1, 2, 3], keepdim=True))
            styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)
        demod = None
        if demodulate:
            # sum_ik (w_oik s_i)^2 = sum_i s_i^2 sum_k w_oik^2: one [N,I]x[I,O] product instead of
            # materialising the [N,O,I,k,k] modulated weights (the bulk of a CPU forward pass).
            demod = (styles.square() @ weight.square().sum(dim=[2, 3]).t() + 1e-8).rsqrt()  # [NO]
        if fused_modconv:
            scale = styles.reshape(batch_size, 1, -1)  # [N1I]
            if demodulate:
                scale = scale * demod.reshape(batch_size, -1, 1)  # [NOI]
            sample_weights = weight.unsqueeze(0) * scale.unsqueeze(-1).unsqueeze(-1)  # [NOIkk]

    if not fused_modconv:
        x = x * styles.to(x.dtype).reshape(batch_size, -1, 1, 1)
        x = conv2d_resample.conv2d_resample(x=x, w=weight.to(x.dtype), f=resample_filter, up=up,
                                            down=down, padding=padding, flip_weight=flip_weight)
        if demodulate and noise is not None:
            return fma.fma(x, demod.to(x.dtype).reshape(batch_size, -1, 1, 1), noise.to(x.dtype))
        if demodulate:
            return x * demod.to(x.dtype).reshape(batch_size, -1, 1, 1)
        return x + noise.to(x.dtype) if noise is not None else x

    with misc.suppress_tracer_warnings():  # the batch size becomes the group count, a constant
        batch_size = int(batch_size)
    x = x.reshape(1, -1, *x.shape[2:])
    sample_weights = sample_weights.reshape(-1, in_channels, kh, kw)
    x = conv2d_resample.conv2d_resample(x=x, w=sample_weights.to(x.dtype), f=resample_filter, up=up,
                                        down=down, padding=padding, groups=batch_size,
                                        flip_weight=flip_weight)
    x = x.reshape(batch_size, -1, *x.shape[2:])
    return x + noise.to(x.dtype) if noise is not None else x


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights are stored as N(0, 1/lr_multiplier^2) and
    scaled at run time by lr_multiplier/sqrt(in_features), so Adam's per-parameter step sizes act
    like a uniform learning rate times lr_multiplier. Always runs at its input's precision."""

    def __init__(self, in_features, out_features, bias=True, activation='linear', lr_multiplier=1,
                 bias_init=0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = float(lr_multiplier / np.sqrt(in_features))
        self.bias_gain = lr_multiplier

    def forward(self, x):
        with _full_precision(x.device):
            weight = self.weight.to(x.dtype) * self.weight_gain
            bias = None
            if self.bias is not None:
                bias = self.bias.to(x.dtype)
                if self.bias_gain != 1:
                    bias = bias * self.bias_gain
            if self.activation == 'linear' and bias is not None:
                return torch.addmm(bias.unsqueeze(0), x, weight.t())
            return bias_act.bias_act(x.matmul(weight.t()), bias, act=self.activation)


@persistence.persistent_class
class Conv2dLayer(torch.nn.Module):
    """Convolution with equalised learning rate (run-time gain 1/sqrt(fan_in)), optional FIR
    up/down-sampling by 2, bias, activation with its default gain, and optional output clamp."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation='linear', up=1,
                 down=1, resample_filter=(1, 3, 3, 1), conv_clamp=None, channels_last=False,
                 trainable=True):
        super().__init__()
        self.in_channels, self.out_channels, self.activation = in_channels, out_channels, activation
        self.up, self.down, self.conv_clamp = up, down, conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        weight = _random_weight(out_channels, in_channels, kernel_size, channels_last)
        bias = torch.zeros([out_channels]) if bias else None
        if trainable:
            self.weight = torch.nn.Parameter(weight)
            self.bias = torch.nn.Parameter(bias) if bias is not None else None
        else:  # frozen layers (Freeze-D) stay in the state dict but out of the optimiser
            self.register_buffer('weight', weight)
            self.register_buffer('bias', bias)

    def forward(self, x, gain=1):
        weight = (self.weight * self.weight_gain).to(x.dtype)
        x = conv2d_resample.conv2d_resample(x=x, w=weight, f=self.resample_filter, up=self.up,
                                            down=self.down, padding=self.padding,
                                            flip_weight=(self.up == 1))
        bias = self.bias.to(x.dtype) if self.bias is not None else None
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, bias, act=self.activation, gain=self.act_gain * gain, clamp=clamp)


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and an embedded class label) -> w, broadcast to [N, num_ws, w_dim]; tracks the mean w
    for truncation. Runs in float32 whatever the autocast state (see the module docstring)."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None,
                 layer_features=None, activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta

        embed_features = (w_dim if embed_features is None else embed_features) if c_dim > 0 else 0
        layer_features = w_dim if layer_features is None else layer_features
        features = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f'fc{idx}', FullyConnectedLayer(features[idx], features[idx + 1],
                                                          activation=activation, lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False,
                update_emas=None):
        if update_emas is not None:  # StyleGAN3-style spelling of the same switch
            skip_w_avg_update = not update_emas
        with _full_precision(z.device if z is not None else c.device):
            x = None
            if self.z_dim > 0:
                misc.assert_shape(z, [None, self.z_dim])
                x = normalize_2nd_moment(z.to(torch.float32))
            if self.c_dim > 0:
                misc.assert_shape(c, [None, self.c_dim])
                y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
                x = torch.cat([x, y], dim=1) if x is not None else y
            for idx in range(self.num_layers):
                x = getattr(self, f'fc{idx}')(x)

            if self.w_avg_beta is not None and self.training and not skip_w_avg_update:
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

            if self.num_ws is not None:
                x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

            if truncation_psi != 1:
                if self.w_avg_beta is None:
                    raise NetworkConfigError('truncation needs a tracked w_avg; build the mapping '
                                             'network with w_avg_beta set (e.g. 0.995) or use truncation_psi=1.')
                if self.num_ws is None or truncation_cutoff is None:
                    x = self.w_avg.lerp(x, truncation_psi)
                else:
                    head = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
                    x = torch.cat([head, x[:, truncation_cutoff:]], dim=1)
        return x


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated 3x3 convolution (optionally up-sampling), per-pixel noise, bias, activation."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, kernel_size=3, up=1,
                 use_noise=True, activation='lrelu', resample_filter=(1, 3, 3, 1), conv_clamp=None,
                 channels_last=False):
        super().__init__()
        self.resolution, self.up, self.use_noise = resolution, up, use_noise
        self.activation, self.conv_clamp = activation, conv_clamp
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.padding = kernel_size // 2
        self.act_gain = bias_act.activation_funcs[activation].def_gain

        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)  # styles start at 1
        self.weight = torch.nn.Parameter(_random_weight(out_channels, in_channels, kernel_size, channels_last))
        if use_noise:
            self.register_buffer('noise_const', torch.randn([resolution, resolution]))
            self.noise_strength = torch.nn.Parameter(torch.zeros([]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', fused_modconv=True, gain=1):
        _check_choice('noise_mode', noise_mode, NOISE_MODES)
        misc.assert_shape(x, [None, self.weight.shape[1], self.resolution // self.up,
                              self.resolution // self.up])
        styles = self.affine(w)

        noise = None
        if self.use_noise and noise_mode == 'random':
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution], device=x.device)
            noise = noise * self.noise_strength
        elif self.use_noise and noise_mode == 'const':
            noise = self.noise_const * self.noise_strength

        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, noise=noise, up=self.up,
                             padding=self.padding, resample_filter=self.resample_filter,
                             flip_weight=(self.up == 1), fused_modconv=fused_modconv)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation,
                                 gain=self.act_gain * gain, clamp=clamp)


@persistence.persistent_class
class ToRGBLayer(torch.nn.Module):
    """Modulated 1x1 convolution without demodulation; the style carries the equalised-lr gain."""

    def __init__(self, in_channels, out_channels, w_dim, kernel_size=1, conv_clamp=None,
                 channels_last=False):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(_random_weight(out_channels, in_channels, kernel_size, channels_last))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = float(1 / np.sqrt(in_channels * kernel_size ** 2))

    def forward(self, x, w, fused_modconv=True):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x=x, weight=self.weight, styles=styles, demodulate=False,
                             fused_modconv=fused_modconv)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.conv_clamp)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One resolution of the synthesis network: (learned 4x4 constant | 2x up-sampling conv), conv,
    and for 'skip' a ToRGB whose output is added to the FIR-up-sampled image of the previous block."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last,
                 architecture='skip', resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, **layer_kwargs):
        _check_choice('architecture', architecture, ARCHITECTURES)
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16, self.channels_last = use_fp16, use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_conv = self.num_torgb = 0

        common = {'w_dim': w_dim, 'resolution': resolution, 'conv_clamp': conv_clamp,
                  'channels_last': self.channels_last}
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, up=2, resample_filter=resample_filter,
                                        **common, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels, out_channels, **common, **layer_kwargs)
        self.num_conv += 1
        if is_last or architecture == 'skip':
            self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp,
                                    channels_last=self.channels_last)
            self.num_torgb += 1
        if in_channels != 0 and architecture == 'resnet':
            self.skip = Conv2dLayer(in_channels, out_channels, kernel_size=1, bias=False, up=2,
                                    resample_filter=resample_filter, channels_last=self.channels_last)

    def forward(self, x, img, ws, force_fp32=False, fused_modconv=None, **layer_kwargs):
        misc.assert_shape(ws, [None, self.num_conv + self.num_torgb, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, force_fp32, ws.device)
        memory_format = _activation_memory_format(self.channels_last, dtype, ws.device)
        if fused_modconv is None:
            # Training backpropagates into per-sample weights, which costs more than scaling the
            # activations; in fp16 the fused weights can overflow before demodulation. On CPU the
            # grouped convolution measured ~25% slower for inference (64x64, batch 8, fp32 and bf16).
            with misc.suppress_tracer_warnings():
                fused_modconv = ((not self.training) and ws.device.type == 'cuda'
                                 and (dtype == torch.float32 or int(ws.shape[0]) == 1))

        if self.in_channels == 0:
            x = self.const.to(dtype=dtype).unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = x.contiguous(memory_format=memory_format)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            misc.assert_shape(x, [None, self.in_channels, self.resolution // 2, self.resolution // 2])
            x = x.to(dtype=dtype, memory_format=memory_format)
            if self.architecture == 'resnet':
                # sqrt(0.5) on both branches keeps the sum at the variance of one branch.
                y = self.skip(x, gain=SKIP_GAIN)
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, gain=SKIP_GAIN,
                               **layer_kwargs)
                x = y.to(x.dtype) + x
            else:
                x = self.conv0(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
                x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)

        if img is not None:
            misc.assert_shape(img, [None, self.img_channels, self.resolution // 2, self.resolution // 2])
            with _full_precision(img.device):
                img = upfirdn2d.upsample2d(img, self.resample_filter)
        if self.is_last or self.architecture == 'skip':
            y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv)
            y = y.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            img = img + y if img is not None else y
        return x, img


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, img_channels, img_resolution, img_resolution] (float32).
    Channels at resolution r: min(channel_base // r, channel_max)."""

    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512,
                 num_fp16_res=0, **block_kwargs):
        _check_resolution(img_resolution, minimum=4)
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 0
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim=w_dim,
                                   resolution=res, img_channels=img_channels, is_last=is_last,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            # Consecutive blocks share a w: block i's ToRGB uses the same w as block i+1's conv0.
            self.num_ws += block.num_conv + (block.num_torgb if is_last else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws = ws.narrow(1, w_idx, block.num_conv + block.num_torgb)
            w_idx += block.num_conv
            x, img = block(x, img, block_ws, **block_kwargs)
        return img


@persistence.persistent_class
class Generator(torch.nn.Module):
    """G(z, c) -> image in about [-1, 1].

    `mapping_kwargs['class_name']` (optional) replaces MappingNetwork by any class constructed with
    `dnnlib.util.construct_class_by_name(class_name, z_dim=, c_dim=, w_dim=, num_ws=, **rest)`; it
    must implement forward(z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False)
    -> ws [N, num_ws, w_dim], and should be a persistent class so snapshots stay self-contained.
    """

    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs=None,
                 synthesis_kwargs=None):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution,
                                          img_channels=img_channels, **(synthesis_kwargs or {}))
        self.num_ws = self.synthesis.num_ws
        mapping_kwargs = dict(mapping_kwargs or {})
        mapping_class_name = mapping_kwargs.pop('class_name', None)
        common = {'z_dim': z_dim, 'c_dim': c_dim, 'w_dim': w_dim, 'num_ws': self.num_ws}
        if mapping_class_name is None:
            self.mapping = MappingNetwork(**common, **mapping_kwargs)
        else:
            self.mapping = dnnlib.util.construct_class_by_name(class_name=mapping_class_name,
                                                               **common, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, skip_w_avg_update=False,
                **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          skip_w_avg_update=skip_w_avg_update)
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        return self.synthesis(ws, **synthesis_kwargs)


@persistence.persistent_class
class DiscriminatorBlock(torch.nn.Module):
    """One resolution of D: (FromRGB at the first block or for 'skip'), conv, 2x down-sampling conv,
    and for 'resnet' a 1x1 down-sampling shortcut."""

    def __init__(self, in_channels, tmp_channels, out_channels, resolution, img_channels,
                 first_layer_idx, architecture='resnet', activation='lrelu',
                 resample_filter=(1, 3, 3, 1), conv_clamp=None, use_fp16=False,
                 fp16_channels_last=False, freeze_layers=0):
        _check_choice('architecture', architecture, ARCHITECTURES)
        assert in_channels in (0, tmp_channels)
        super().__init__()
        self.in_channels, self.resolution, self.img_channels = in_channels, resolution, img_channels
        self.first_layer_idx, self.architecture = first_layer_idx, architecture
        self.use_fp16, self.channels_last = use_fp16, use_fp16 and fp16_channels_last
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.num_layers = 0

        def layer(*args, **kwargs):  # Freeze-D: the first `freeze_layers` layers of D do not train
            trainable = self.first_layer_idx + self.num_layers >= freeze_layers
            self.num_layers += 1
            return Conv2dLayer(*args, trainable=trainable, channels_last=self.channels_last, **kwargs)

        if in_channels == 0 or architecture == 'skip':
            self.fromrgb = layer(img_channels, tmp_channels, kernel_size=1, activation=activation,
                                 conv_clamp=conv_clamp)
        self.conv0 = layer(tmp_channels, tmp_channels, kernel_size=3, activation=activation,
                           conv_clamp=conv_clamp)
        self.conv1 = layer(tmp_channels, out_channels, kernel_size=3, activation=activation, down=2,
                           resample_filter=resample_filter, conv_clamp=conv_clamp)
        if architecture == 'resnet':
            self.skip = layer(tmp_channels, out_channels, kernel_size=1, bias=False, down=2,
                              resample_filter=resample_filter)

    def forward(self, x, img, force_fp32=False):
        device = x.device if x is not None else img.device
        dtype = _block_dtype(self.use_fp16, force_fp32, device)
        memory_format = _activation_memory_format(self.channels_last, dtype, device)
        if x is not None:
            misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
            x = x.to(dtype=dtype, memory_format=memory_format)
        if self.in_channels == 0 or self.architecture == 'skip':
            misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
            img = _to_layout(img, dtype, memory_format)
            y = self.fromrgb(img)
            x = x + y.to(x.dtype) if x is not None else y
            img = upfirdn2d.downsample2d(img, self.resample_filter) if self.architecture == 'skip' else None

        if self.architecture == 'resnet':
            y = self.skip(x, gain=SKIP_GAIN)
            x = self.conv1(self.conv0(x), gain=SKIP_GAIN)
            x = y.to(x.dtype) + x
        else:
            x = self.conv1(self.conv0(x))
        return x, img


@persistence.persistent_class
class MinibatchStdLayer(torch.nn.Module):
    """Appends the across-group standard deviation (averaged over channels and pixels) as extra
    feature maps, so D can see a lack of variety in a batch. Groups of `group_size` samples; if the
    batch is not a multiple of it, the largest divisor of the batch below it is used."""

    def __init__(self, group_size, num_channels=1):
        super().__init__()
        self.group_size, self.num_channels = group_size, num_channels

    def forward(self, x):
        batch, channels, height, width = x.shape
        with misc.suppress_tracer_warnings():
            batch = int(batch)
        group = min(self.group_size, batch) if self.group_size is not None else batch
        while batch % group:
            group -= 1
        num_groups = self.num_channels
        y = x.to(torch.float32).reshape(group, -1, num_groups, channels // num_groups, height, width)
        y = (y - y.mean(dim=0)).square().mean(dim=0)   # [nFcHW] variance over each group
        y = (y + 1e-8).sqrt().mean(dim=[2, 3, 4])      # [nF]
        y = y.reshape(-1, num_groups, 1, 1).repeat(group, 1, height, width)
        return torch.cat([x, y.to(x.dtype)], dim=1)


@persistence.persistent_class
class DiscriminatorEpilogue(torch.nn.Module):
    """4x4 head of D: minibatch stddev, 3x3 conv, fc (the "features"), output (1 logit, or cmap_dim
    values projected onto the mapped label). Always float32 (see the module docstring)."""

    def __init__(self, in_channels, cmap_dim, resolution, img_channels, architecture='resnet',
                 mbstd_group_size=4, mbstd_num_channels=1, activation='lrelu', conv_clamp=None):
        _check_choice('architecture', architecture, ARCHITECTURES)
        super().__init__()
        self.in_channels, self.cmap_dim, self.resolution = in_channels, cmap_dim, resolution
        self.img_channels, self.architecture = img_channels, architecture

        if architecture == 'skip':
            self.fromrgb = Conv2dLayer(img_channels, in_channels, kernel_size=1, activation=activation)
        self.mbstd = MinibatchStdLayer(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = Conv2dLayer(in_channels + mbstd_num_channels, in_channels, kernel_size=3,
                                activation=activation, conv_clamp=conv_clamp)
        self.fc = FullyConnectedLayer(in_channels * resolution ** 2, in_channels, activation=activation)
        self.out = FullyConnectedLayer(in_channels, 1 if cmap_dim == 0 else cmap_dim)

    def forward(self, x, img, cmap, force_fp32=False, return_features=False):
        misc.assert_shape(x, [None, self.in_channels, self.resolution, self.resolution])
        with _full_precision(x.device):
            x = x.to(dtype=torch.float32, memory_format=torch.contiguous_format)
            if self.architecture == 'skip':
                misc.assert_shape(img, [None, self.img_channels, self.resolution, self.resolution])
                x = x + self.fromrgb(img.to(torch.float32))
            if self.mbstd is not None:
                x = self.mbstd(x)
            features = self.fc(self.conv(x).flatten(1))
            x = self.out(features)
            if self.cmap_dim > 0:
                misc.assert_shape(cmap, [None, self.cmap_dim])
                x = (x * cmap.to(torch.float32)).sum(dim=1, keepdim=True) * (1 / np.sqrt(self.cmap_dim))
        return (x, features) if return_features else x


@persistence.persistent_class
class Discriminator(torch.nn.Module):
    """D(img, c) -> logits [N, 1]; with return_features=True also the epilogue fc output
    [N, feature_dim], so an auxiliary head can share D's trunk."""

    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768,
                 channel_max=512, num_fp16_res=0, conv_clamp=None, cmap_dim=None, block_kwargs=None,
                 mapping_kwargs=None, epilogue_kwargs=None):
        _check_resolution(img_resolution, minimum=8)
        _check_choice('architecture', architecture, ARCHITECTURES)
        super().__init__()
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(self.img_resolution_log2, 2, -1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions + [4]}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        cmap_dim = 0 if c_dim == 0 else channels[4] if cmap_dim is None else cmap_dim
        self.cmap_dim = cmap_dim
        self.feature_dim = channels[4]

        common = {'img_channels': img_channels, 'architecture': architecture, 'conv_clamp': conv_clamp}
        layer_idx = 0
        for res in self.block_resolutions:
            block = DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                       channels[res // 2], resolution=res, first_layer_idx=layer_idx,
                                       use_fp16=res >= fp16_resolution, **(block_kwargs or {}), **common)
            layer_idx += block.num_layers
            setattr(self, f'b{res}', block)
        if c_dim > 0:
            self.mapping = MappingNetwork(z_dim=0, c_dim=c_dim, w_dim=cmap_dim, num_ws=None,
                                          w_avg_beta=None, **(mapping_kwargs or {}))
        self.b4 = DiscriminatorEpilogue(channels[4], cmap_dim=cmap_dim, resolution=4,
                                        **(epilogue_kwargs or {}), **common)

    def forward(self, img, c, return_features=False, **block_kwargs):
        x = None
        for res in self.block_resolutions:
            x, img = getattr(self, f'b{res}')(x, img, **block_kwargs)
        cmap = self.mapping(None, c) if self.c_dim > 0 else None
        return self.b4(x, img, cmap, return_features=return_features)

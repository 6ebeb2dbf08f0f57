"""Projecting an image into a generator's W (or W+) space, as StyleGAN2-ADA's projector does.

The optimisation follows the official projector's recipe: start from the mean w (estimated from
10 000 latents of the snapshot's own sampler), add noise of 5 % of w's spread to the optimised w
that fades out over the first 75 % of the steps, Adam (betas 0.9, 0.999) at a learning rate of
0.1 with a cosine ramp-down over the last 25 % and a linear ramp-up over the first 5 %, and
optimise the per-layer noise maps too, held in check by a regulariser (weight 1e5) that penalises
their autocorrelation at every scale down to 8x8, renormalised after each step.

The image distance is a callable `distance(synth, target) -> scalar`, with both images in [-1, 1]
(NCHW); projector.py offers the official VGG16 perceptual distance (by URL) and an offline one.
"""

import math

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib

DEFAULTS = dnnlib.EasyDict(num_steps=1000, w_avg_samples=10000, initial_lr=0.1, initial_noise_factor=0.05,
                           lr_rampdown_length=0.25, lr_rampup_length=0.05, noise_ramp_length=0.75,
                           regularize_noise_weight=1e5)


def learning_rate(t, initial_lr=DEFAULTS.initial_lr, rampdown=DEFAULTS.lr_rampdown_length,
                  rampup=DEFAULTS.lr_rampup_length):
    """The learning rate at progress t in [0, 1): cosine ramp-down at the end, linear ramp-up at the start."""
    ramp = min(1.0, (1.0 - t) / rampdown)
    ramp = 0.5 - 0.5 * math.cos(ramp * math.pi)
    return initial_lr * ramp * min(1.0, t / rampup)


def w_noise_scale(t, w_std, factor=DEFAULTS.initial_noise_factor, length=DEFAULTS.noise_ramp_length):
    """Spread of the noise added to the optimised w at progress t (quadratic fade to zero)."""
    return w_std * factor * max(0.0, 1.0 - t / length) ** 2


def noise_regularizer(noise_maps):
    """Squared autocorrelation (one pixel right and down) of every noise map, at every scale to 8x8."""
    total = 0.0
    for v in noise_maps:
        v = v[None, None] if v.ndim == 2 else v
        while True:
            total = total + (v * torch.roll(v, shifts=1, dims=3)).mean() ** 2 \
                + (v * torch.roll(v, shifts=1, dims=2)).mean() ** 2
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, kernel_size=2)
    return total


def noise_buffers(G):
    """name -> the synthesis network's constant noise maps (what noise_mode='const' uses)."""
    return {name: buf for name, buf in G.synthesis.named_buffers() if 'noise_const' in name}


@torch.no_grad()
def w_statistics(G, sampler, num_samples=DEFAULTS.w_avg_samples, seed=123, c=None, device='cpu'):
    """(w_avg [1, 1, w_dim], w_std scalar) over latents of the snapshot's own sampler."""
    generator = torch.Generator(device=device).manual_seed(seed)
    z = sampler.sample(num_samples, device=device, generator=generator).z
    c = torch.zeros([num_samples, G.c_dim], device=device) if c is None else c.expand(num_samples, -1)
    ws = torch.cat([G.mapping(zi, ci) for zi, ci in zip(z.split(1000), c.split(1000))])[:, :1]
    w_avg = ws.mean(dim=0, keepdim=True)
    w_std = float(((ws - w_avg) ** 2).sum() / num_samples) ** 0.5
    return w_avg, w_std


def project(G, target, distance, sampler, num_steps=DEFAULTS.num_steps, w_plus=False, seed=303, c=None,
            device='cpu', w_avg_samples=DEFAULTS.w_avg_samples, progress=None, w_init=None):
    """Optimise w (W: one w for every layer; W+: one per layer) and the noise maps to render `target`.

    target: [C, H, W] in [-1, 1] at the generator's resolution. Returns (ws [num_steps, num_ws, w_dim]
    of every step, losses [num_steps] of the image distance). `progress(step, loss)` is called per step.
    `w_init` [1, 1 or num_ws, w_dim] starts from a given w instead of the mean (e.g. an encoder's guess).
    The noise maps of G are left holding the optimised noise (generate with noise_mode='const').
    """
    G = G.eval().requires_grad_(False)
    np.random.seed(seed)
    torch.manual_seed(seed)
    c = torch.zeros([1, G.c_dim], device=device) if c is None else c
    w_avg, w_std = w_statistics(G, sampler, num_samples=w_avg_samples, c=c, device=device)
    start = w_avg if w_init is None else w_init.to(device)
    start = start[:, :1] if not w_plus else start.expand(1, G.num_ws, -1) if start.shape[1] == 1 else start
    w_opt = start.detach().clone().requires_grad_(True)
    noises = list(noise_buffers(G).values())
    optimizer = torch.optim.Adam([w_opt] + noises, betas=(0.9, 0.999), lr=DEFAULTS.initial_lr)
    with torch.no_grad():
        for buf in noises:
            buf.normal_()
    for buf in noises:
        buf.requires_grad_(True)
    target = target[None].to(device=device, dtype=torch.float32)

    history, losses = [], []
    try:
        for step in range(num_steps):
            t = step / num_steps
            for group in optimizer.param_groups:
                group['lr'] = learning_rate(t)
            w_noise = torch.randn_like(w_opt) * w_noise_scale(t, w_std)
            ws = (w_opt + w_noise)
            ws = ws.expand(1, G.num_ws, -1) if not w_plus else ws
            synth = G.synthesis(ws, noise_mode='const')
            dist = distance(synth, target)
            loss = dist + noise_regularizer(noises) * DEFAULTS.regularize_noise_weight
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            with torch.no_grad():  # keep the noise maps unit Gaussian, as the official projector
                for buf in noises:
                    buf -= buf.mean()
                    buf *= buf.square().mean().rsqrt()
            history.append(w_opt.detach().expand(1, G.num_ws, -1)[0].clone())
            losses.append(float(dist))
            if progress is not None:
                progress(step, losses[-1])
    finally:
        for buf in noises:
            buf.requires_grad_(False)
    return torch.stack(history), losses


def pixel_distance(synth, target):
    """Offline image distance: mean squared error at full, half and quarter resolution (summed).

    The coarser scales weigh layout (where a shape is) more than single pixels; without a
    perceptual network this is what can be had offline, and on flat synthetic images such as
    dSprites it is the natural measure.
    """
    total = 0.0
    for _ in range(3):
        total = total + F.mse_loss(synth, target)
        if synth.shape[2] <= 8:
            break
        synth, target = F.avg_pool2d(synth, 2), F.avg_pool2d(target, 2)
    return total


class VGG16Distance:
    """The official projector's distance: squared difference of the VGG16 LPIPS features.

    `module` is the TorchScript VGG16 of the StyleGAN2-ADA metrics (called with return_lpips=True),
    fed images in [0, 255], 3 channels, at most 256x256 (area-downsampled, as the official code).
    """

    def __init__(self, module):
        self.module = module
        self.target_features = None

    def _features(self, images):
        images = (images + 1) * (255 / 2)
        if images.shape[1] == 1:
            images = images.repeat(1, 3, 1, 1)
        if images.shape[2] > 256:
            images = F.interpolate(images, size=(256, 256), mode='area')
        return self.module(images, resize_images=False, return_lpips=True)

    def __call__(self, synth, target):
        if self.target_features is None:
            with torch.no_grad():
                self.target_features = self._features(target)
        return (self.target_features - self._features(synth)).square().sum()

"""The VAE decoder beside the ID-GAN generator for the same codes (`generate.py --compare-vae`).

ID-GAN's headline picture: the stage-1 VAE and the GAN distilled from it render the same code,
the VAE blurry, the GAN sharp, with the same factors. An ID-GAN snapshot carries the VAE decoder
(`Dec`, stored by the distillation term), so no VAE file is needed. Outputs, written atomically:

    compare-vae.png                  row 1: VAE decoder, row 2: ID-GAN; one column per seed
    traverse-seed<seed>-vae.png      with --traverse: the VAE decoder's traversal of the same code,
                                     beside the generator's traverse-seed<seed>.png

The VAE sees only the code part of z (the nuisance is the GAN's alone). Its images are resized
to the generator's resolution (nearest neighbour, so its own pixels stay visible) when the GAN is
larger than the VAE.
"""

import os

import torch

import dnnlib
from disentangle import traverse


def check_comparable(data, sampler):
    """Raise TraversalError unless the snapshot has a VAE decoder and a code sampler it fits."""
    Dec = data.get('Dec') if isinstance(data, dict) else None
    if Dec is None or not hasattr(sampler, 'code_dim'):
        raise traverse.TraversalError('--compare-vae needs an ID-GAN snapshot that carries its VAE decoder ("Dec"; '
                                      'written by train.py --cfg=idgan); this snapshot has none.')
    if getattr(Dec, 'code_dim', sampler.code_dim) != sampler.code_dim:
        raise traverse.TraversalError(f'the snapshot\'s VAE decoder takes {Dec.code_dim} code dimensions but its '
                                      f'sampler has {sampler.code_dim}; the snapshot is inconsistent.')
    return Dec


@torch.no_grad()
def decode(Dec, code, resolution=None, amp_dtype=None, batch=64):
    """uint8 [N, C, R, R] mean images of the VAE decoder for codes [N, code_dim]."""
    out = []
    enabled = amp_dtype is not None and amp_dtype != torch.float32
    for chunk in code.split(batch):
        with torch.autocast(device_type=chunk.device.type, dtype=amp_dtype if enabled else None, enabled=enabled):
            images = Dec.to_image(Dec(chunk)).float()
        if resolution is not None and images.shape[-1] != resolution:
            images = torch.nn.functional.interpolate(images, size=(resolution, resolution), mode='nearest')
        out.append((images * 127.5 + 128).clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


def write_comparison(G, Dec, sampler, latents, outdir, name='compare-vae', c=None, amp_dtype=None,
                     noise_mode='const', truncation_psi=1):
    """Write <name>.png for a list of sampler outputs (batch 1 each); returns the path and the images.

    Returns dnnlib.EasyDict(path=..., vae=uint8 [N, C, H, W], gan=uint8 [N, C, H, W]).
    """
    z = torch.cat([latent.z for latent in latents])
    code = z[:, :sampler.code_dim]
    gan = traverse.render(G, z, c=c, amp_dtype=amp_dtype, noise_mode=noise_mode, truncation_psi=truncation_psi)
    vae = decode(Dec, code, resolution=G.img_resolution, amp_dtype=amp_dtype)
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, name + '.png')
    grid = traverse.grid_image(torch.cat([vae, gan]), 2, len(latents), row_labels=['VAE', 'ID-GAN'])
    traverse._save_atomic(grid, path)
    return dnnlib.EasyDict(path=path, vae=vae, gan=gan)


def write_vae_traversal(G, Dec, sampler, latent, outdir, name, dims=None, steps=traverse.DEFAULT_STEPS,
                        quantiles=traverse.DEFAULT_QUANTILES, amp_dtype=None):
    """<name>.png: the VAE decoder's traversal with the same rows, columns and values as write_traversal."""
    dims = traverse.default_dims(sampler) if dims is None else list(dims)
    traverse.check_dims(sampler, dims)
    ranges = traverse.value_ranges(sampler, dims, quantiles)
    z = traverse.traversal_latents(latent.z, dims, ranges.to(latent.z.device), steps)
    images = decode(Dec, z[:, :sampler.code_dim], resolution=G.img_resolution, amp_dtype=amp_dtype)
    labels = [f'c{d}\n{lo:+.1f}\n{hi:+.1f}' for d, (lo, hi) in zip(dims, ranges.tolist())]
    os.makedirs(outdir, exist_ok=True)
    path = os.path.join(outdir, name + '.png')
    traverse._save_atomic(traverse.grid_image(images, len(dims), steps, labels), path)
    return dnnlib.EasyDict(path=path, images=images, ranges=ranges)

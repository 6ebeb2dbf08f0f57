"""Generate images with a trained network snapshot (ours or an official StyleGAN2-ADA pickle)."""

import os
import re

import click
import PIL.Image
import torch

from dnnlib.progress import Progress
from torch_utils.precision import PRECISIONS, autocast_dtype, resolve_precision


def parse_range(text):
    """'0-3,7,10-11' -> [0, 1, 2, 3, 7, 10, 11]."""
    values = []
    for part in str(text).split(','):
        part = part.strip()
        m = re.fullmatch(r'(\d+)-(\d+)', part)
        if m:
            lo, hi = int(m.group(1)), int(m.group(2))
            if hi < lo:
                raise ValueError(f'range "{part}" ends before it starts')
            values.extend(range(lo, hi + 1))
        elif re.fullmatch(r'\d+', part):
            values.append(int(part))
        else:
            raise ValueError(f'"{part}" is not a number or a range like 0-7')
    return values


def _save_png(img, path):
    """img: [C, H, W] uint8 tensor; written atomically."""
    arr = img.permute(1, 2, 0).cpu().numpy()
    image = PIL.Image.fromarray(arr[:, :, 0], 'L') if arr.shape[2] == 1 else PIL.Image.fromarray(arr, 'RGB')
    tmp = f'{path}.tmp{os.getpid()}.png'
    image.save(tmp)
    os.replace(tmp, path)


def to_uint8(img):
    """[N, C, H, W] in [-1, 1] -> uint8."""
    return (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)


@click.command(context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--seeds', help='Seeds, e.g. 0-7 or 1,5,9', metavar='LIST', default='0-7')
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=float, default=1.0)
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const')
@click.option('--class', 'class_idx', help='Class label (conditional networks)', type=click.IntRange(min=0))
@click.option('--outdir', help='Where to save the images', metavar='DIR', required=True)
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--precision', help='Inference precision', type=click.Choice(PRECISIONS), default='fp32')
@click.option('--traverse', help='Write a latent traversal per seed (PNG grid, GIF, MP4 with imageio-ffmpeg)', is_flag=True)
@click.option('--dims', help='--traverse: dimensions to sweep, e.g. 0-3,7 [default: every code dimension; first 10 of z]',
              metavar='LIST')
@click.option('--steps', help='--traverse: values per dimension', type=click.IntRange(min=2), default=9)
@click.option('--encode', 'encode_path', help='ID-GAN: re-render a real image from its code (with each seed\'s nuisance)',
              metavar='PNG')
@click.option('--set', 'edits', help='Set a code dimension before rendering, DIM=VALUE (repeatable)', multiple=True,
              metavar='DIM=VALUE')
def main(network_pkl, seeds, truncation_psi, noise_mode, class_idx, outdir, device, precision, traverse, dims, steps,
         encode_path, edits):
    """Generate images with a trained network.

    \b
    # Eight images from a snapshot, on CPU:
    python generate.py --network=runs/00000-dsprites-stylegan2-batch8/network-snapshot-000002.pkl --seeds=0-7 --outdir=out

    \b
    # Truncated samples of a conditional model, class 3:
    python generate.py --network=snap.pkl --seeds=0-15 --trunc=0.7 --class=3 --outdir=out

    \b
    # ID-GAN: sweep every code dimension for 4 seeds (traverse-seed*.png/.gif), or chosen z dims of any GAN:
    python generate.py --network=snap.pkl --traverse --seeds=0-3 --outdir=out
    python generate.py --network=snap.pkl --traverse --dims=0-3 --steps=7 --seeds=0 --outdir=out

    \b
    # ID-GAN: encode a real image, re-render it with fresh nuisance, and move code dimension 4 to 1.5:
    python generate.py --network=snap.pkl --encode=photo.png --set 4=1.5 --seeds=0-3 --outdir=out
    """
    from training.latent import sample_for_seed
    from training.snapshot import SnapshotError, load_generator

    try:
        seed_list = parse_range(seeds)
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--seeds')
    try:
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    except RuntimeError:
        raise click.ClickException(f'--device={device} is not a torch device name (try cpu or cuda).')
    if os.path.exists(outdir) and not os.path.isdir(outdir):
        raise click.ClickException(f'--outdir={outdir} is a file; give a directory for the images.')
    amp = autocast_dtype(resolve_precision(precision, device))
    try:
        G, sampler, _data = load_generator(network_pkl, device=device)
    except SnapshotError as err:
        raise click.ClickException(str(err))

    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None:
            raise click.ClickException('this network is conditional: pass --class (0 .. %d).' % (G.c_dim - 1))
        if class_idx >= G.c_dim:
            raise click.ClickException(f'--class={class_idx} is out of range for a network with {G.c_dim} classes.')
        c[:, class_idx] = 1
    elif class_idx is not None:
        print('warning: --class is ignored, the network is unconditional')

    plugin = image = None
    if traverse or encode_path or edits:
        plugin = _traversal_plugin()
        try:
            edit_values = plugin.parse_edits(edits)
            dim_list = parse_range(dims) if dims is not None else None
            if encode_path is not None:
                if _data.get('E') is None or not hasattr(sampler, 'assemble'):
                    raise plugin.TraversalError(f'--encode needs an ID-GAN snapshot (with an encoder "E" and a code '
                                                f'sampler); {network_pkl} has none.')
                image = plugin.load_image_for_encoder(encode_path, _data['E'], device=device)
                encoder = _data['E'].eval().requires_grad_(False).to(device)
        except ValueError as err:
            raise click.ClickException(str(err))

    os.makedirs(outdir, exist_ok=True)
    written = 0
    with Progress(len(seed_list), desc='generating', unit='seed') as progress:
        for seed in seed_list:
            latents = sample_for_seed(sampler, seed, device=device)
            name = f'seed{seed:04d}'
            if plugin is not None:
                try:
                    if image is not None:
                        latents = plugin.encode_latent(encoder, sampler, image, seed, amp_dtype=amp)
                        name = f'encode-{os.path.splitext(os.path.basename(encode_path))[0]}-{name}'
                    latents.z = plugin.apply_edits(latents.z, sampler, edit_values)
                    if traverse:
                        out = plugin.write_traversal(G, sampler, latents, outdir, f'traverse-{name}', dims=dim_list,
                                                     steps=steps, c=c, amp_dtype=amp, noise_mode=noise_mode,
                                                     truncation_psi=truncation_psi)
                        written += len(out.paths)
                        progress.update(1)
                        continue
                except ValueError as err:
                    raise click.ClickException(str(err))
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                img = G(latents.z, c, truncation_psi=truncation_psi, noise_mode=noise_mode)
            _save_png(to_uint8(img)[0], os.path.join(outdir, f'{name}.png'))
            written += 1
            progress.update(1)
    if image is not None:  # what the encoder saw, to compare with the re-renderings
        stem = os.path.splitext(os.path.basename(encode_path))[0]
        _save_png(to_uint8(image)[0], os.path.join(outdir, f'encode-{stem}-input.png'))
        written += 1
    print(f'wrote {written} files to {outdir}')


def _traversal_plugin():
    """disentangle.traverse, imported only when its flags are used (generate.py works without the plug-in)."""
    try:
        from disentangle import traverse
    except ImportError:
        raise click.ClickException('--traverse, --encode and --set need the disentangle/ plug-in, which is not '
                                   'installed here; generate plain images without them.')
    return traverse


if __name__ == '__main__':
    main()

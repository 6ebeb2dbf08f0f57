"""Project an image into a generator's latent space (StyleGAN2-ADA's projector.py interface).

Writes target.png, proj.png (the final projection), projected_w.npz (`w`: [1, num_ws, w_dim], as
the official projector) and, with --save-video and imageio-ffmpeg installed, proj.mp4 (target beside
the projection at every step). `python generate.py --projected-w=out/projected_w.npz` renders it.
"""

import os

import click
import numpy as np
import PIL.Image
import torch

from dnnlib import cli
from dnnlib.cli import makedirs_or_fail, os_errors_as_user_errors, save_image
from dnnlib.progress import Progress

# The VGG16 of the StyleGAN2-ADA metrics, whose LPIPS features the official projector compares.
VGG16_URL = 'https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/vgg16.pt'


def load_target(path, G):
    """The image at `path` as [C, H, W] in [-1, 1] at G's resolution and channels (centre crop, Lanczos)."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            image = image.convert('L' if G.img_channels == 1 else 'RGB')
    except FileNotFoundError:
        raise cli.UserError(f'--target={path} does not exist.') from None
    except (OSError, ValueError, PIL.Image.DecompressionBombError) as err:
        raise cli.UserError(f'--target={path} is not an image Pillow can read ({err}).') from None
    w, h = image.size
    side = min(w, h)
    notes = []
    if w != h:
        image = image.crop(((w - side) // 2, (h - side) // 2, (w + side) // 2, (h + side) // 2))
        notes.append(f'centre-cropped from {w}x{h}')
    if side != G.img_resolution:
        image = image.resize((G.img_resolution, G.img_resolution), PIL.Image.LANCZOS)
        notes.append(f'resized from {side}x{side} to {G.img_resolution}x{G.img_resolution}')
    if notes:
        print(f'note: --target {", ".join(notes)} to match the network.')
    array = np.asarray(image, dtype=np.float32)
    array = array[:, :, None] if array.ndim == 2 else array
    return torch.from_numpy(array).permute(2, 0, 1) / 127.5 - 1


def to_pil(img):
    """[C, H, W] in [-1, 1] -> PIL image."""
    array = (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).cpu().numpy()
    return PIL.Image.fromarray(array[:, :, 0], 'L') if array.shape[2] == 1 else PIL.Image.fromarray(array, 'RGB')


def load_distance(name, url, device):
    from training import projection
    if name == 'pixel':
        return projection.pixel_distance
    import dnnlib
    try:
        with dnnlib.util.open_url(url, verbose=True) as f:
            module = torch.jit.load(f, map_location=device).eval()
    except Exception as err:  # noqa: BLE001  (a missing network, a non-TorchScript file, no connection)
        raise cli.UserError(f'--distance=vgg16 cannot load {url} ({type(err).__name__}: {str(err)[:200]}); pass a local '
                            f'copy with --vgg16-url=PATH, or use --distance=pixel (offline).') from None
    return projection.VGG16Distance(module)


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--target', 'target_fname', help='Target image file to project', required=True, metavar='FILE')
@click.option('--num-steps', help='Number of optimisation steps', type=click.IntRange(min=1), default=1000)
@click.option('--seed', help='Random seed', type=int, default=303)
@click.option('--save-video', help='Save proj.mp4 of the optimisation (needs imageio-ffmpeg)', type=bool, default=True,
              metavar='BOOL')
@click.option('--w-plus', help='Optimise one w per layer (W+) instead of one w (W)', type=bool, default=False,
              metavar='BOOL')
@click.option('--distance', help='Image distance: vgg16 (the official perceptual distance, downloaded once) or pixel '
              '(offline, multi-scale MSE)', type=click.Choice(['vgg16', 'pixel']), default='pixel')
@click.option('--vgg16-url', help='Where --distance=vgg16 loads its network (URL, file:// or a path)', default=VGG16_URL,
              metavar='URL')
@click.option('--outdir', help='Where to save the output images', required=True, metavar='DIR')
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@os_errors_as_user_errors
def main(network_pkl, target_fname, num_steps, seed, save_video, w_plus, distance, vgg16_url, outdir, device):
    """Project a target image into W (or W+) of a network and save the result.

    \b
    # The offline default (multi-scale pixel distance):
    python projector.py --network=snap.pkl --target=sprite.png --outdir=out --num-steps=500
    \b
    # As StyleGAN2-ADA: the VGG16 perceptual distance (downloaded once), W+ and a video:
    python projector.py --network=snap.pkl --target=face.png --distance=vgg16 --w-plus=1 --outdir=out
    """
    from training.latent import GaussianLatent
    from training.projection import project
    from training.snapshot import SnapshotError, load_generator

    try:
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    except RuntimeError:
        raise cli.UserError(f'--device={device} is not a torch device name (try cpu or cuda).')
    try:
        G, sampler, _data = load_generator(network_pkl, device=device)
    except SnapshotError as err:
        raise cli.UserError(str(err))
    if G.c_dim != 0:
        raise cli.UserError(f'{network_pkl} is conditional; projection needs an unconditional network.')
    if not hasattr(sampler, 'sample'):
        sampler = GaussianLatent(z_dim=G.z_dim)
    target = load_target(target_fname, G)
    measure = load_distance(distance, vgg16_url, device)
    video = None
    if save_video:
        try:
            import imageio
            import imageio_ffmpeg  # noqa: F401  (only its presence: imageio writes mp4 through it)
        except ImportError:
            print('note: imageio-ffmpeg is not installed; no proj.mp4 (pip install imageio-ffmpeg).')
            save_video = False
    makedirs_or_fail(outdir, '--outdir')

    with Progress(num_steps, desc='projecting', unit='step') as progress:
        ws, losses = project(G, target, measure, sampler, num_steps=num_steps, w_plus=w_plus, seed=seed,
                             device=device, progress=lambda step, loss: progress.update(1))
    with torch.no_grad():
        final = G.synthesis(ws[-1:].to(device), noise_mode='const')[0]
    save_image(to_pil(target), os.path.join(outdir, 'target.png'))
    save_image(to_pil(final), os.path.join(outdir, 'proj.png'))
    path = os.path.join(outdir, 'projected_w.npz')
    tmp = os.path.join(outdir, f'.projected_w.{os.getpid()}.npz')
    np.savez(tmp, w=ws[-1:].cpu().numpy())
    os.replace(tmp, path)
    if save_video:
        video_path = os.path.join(outdir, 'proj.mp4')
        video = imageio.get_writer(video_path, mode='I', fps=10, codec='libx264', bitrate='16M')
        target_array = np.asarray(to_pil(target).convert('RGB'))
        with torch.no_grad():
            for w in ws[::max(1, num_steps // 200)]:
                frame = np.asarray(to_pil(G.synthesis(w[None].to(device), noise_mode='const')[0]).convert('RGB'))
                video.append_data(np.concatenate([target_array, frame], axis=1))
        video.close()
    psnr = 10 * np.log10(4 / max(float(((final.cpu() - target) ** 2).mean()), 1e-12))
    print(f'distance {losses[0]:.4f} -> {losses[-1]:.4f} over {num_steps} steps; PSNR of proj.png {psnr:.1f} dB; '
          f'wrote {outdir}/proj.png, projected_w.npz')


if __name__ == '__main__':
    main()

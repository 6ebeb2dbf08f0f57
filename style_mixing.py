"""Style mixing, as StyleGAN2-ADA's style_mixing.py: rows give the base w, columns the styles of some layers.

Works for every mapping network (StyleGAN2's MLP, ID-GAN's code mapping, InfoGAN, StyleGenes) and for
official pickles: each seed's latent comes from the snapshot's own sampler, and mixing happens in W.
"""

import os

import click
import PIL.Image
import torch

from dnnlib import cli
from dnnlib.cli import FINITE_FLOAT, makedirs_or_fail, os_errors_as_user_errors, parse_range, save_image
from dnnlib.progress import Progress
from torch_utils.precision import PRECISIONS, autocast_dtype, resolve_precision


def mixed_ws(row_ws, col_ws, styles):
    """[rows, cols, num_ws, w_dim]: each row's w with the layers in `styles` taken from each column's w."""
    out = row_ws[:, None].repeat(1, col_ws.shape[0], 1, 1)
    if styles:
        index = torch.tensor(styles, device=row_ws.device)
        out[:, :, index] = col_ws[None, :, index]
    return out


def grid_image(images, rows, cols):
    """images[(r, c)] as uint8 [H, W, C] with r, c from -1 (the headers) -> one PIL image; (-1, -1) stays black."""
    height, width, channels = next(iter(images.values())).shape
    canvas = torch.zeros([(rows + 1) * height, (cols + 1) * width, channels], dtype=torch.uint8)
    for (r, c), img in images.items():
        canvas[(r + 1) * height:(r + 2) * height, (c + 1) * width:(c + 2) * width] = img
    array = canvas.numpy()
    return PIL.Image.fromarray(array[:, :, 0], 'L') if channels == 1 else PIL.Image.fromarray(array, 'RGB')


@click.command(cls=cli.Command, context_settings=dict(show_default=True))
@click.option('--network', 'network_pkl', help='Network snapshot (path or URL)', required=True, metavar='PKL')
@click.option('--rows', 'row_seeds', help='Seeds of the rows (the base w), e.g. 85,100,75', required=True, metavar='LIST')
@click.option('--cols', 'col_seeds', help='Seeds of the columns (the mixed-in styles)', required=True, metavar='LIST')
@click.option('--styles', 'col_styles', help='Layers (w indices) whose styles come from the column [default: 0-6, the '
              'coarse styles, as far as the network has them]', metavar='LIST')
@click.option('--trunc', 'truncation_psi', help='Truncation psi', type=FINITE_FLOAT, default=1.0)
@click.option('--noise-mode', help='Noise mode', type=click.Choice(['const', 'random', 'none']), default='const')
@click.option('--class', 'class_idx', help='Class label (conditional networks)', type=click.IntRange(min=0))
@click.option('--outdir', help='Where to save the images', metavar='DIR', required=True)
@click.option('--device', help='Torch device [default: cuda if available, else cpu]', metavar='DEVICE')
@click.option('--precision', help='Inference precision', type=click.Choice(PRECISIONS), default='fp32')
@os_errors_as_user_errors
def main(network_pkl, row_seeds, col_seeds, col_styles, truncation_psi, noise_mode, class_idx, outdir, device,
         precision):
    """Render a style-mixing grid: every row seed with the chosen layers' styles of every column seed.

    \b
    # Coarse styles (layers 0-6) of the column seeds over the row seeds, as StyleGAN2-ADA:
    python style_mixing.py --network=snap.pkl --rows=85,100,75,458,1500 --cols=55,821,1789,293 --outdir=out

    \b
    # Only the fine layers of a 64x64 network (it has 10 w's: 0-9):
    python style_mixing.py --network=snap.pkl --rows=0-3 --cols=4-7 --styles=6-9 --outdir=out

    Writes <row>-<col>.png for every pair (and the unmixed row and column images) and grid.png.
    """
    from training.latent import sample_for_seed
    from training.snapshot import SnapshotError, load_generator

    def seeds(text, flag):
        try:
            values = parse_range(text)
        except ValueError as err:
            raise click.BadParameter(str(err), param_hint=flag)
        if not values:
            raise click.BadParameter('give at least one seed', param_hint=flag)
        return values

    rows, cols = seeds(row_seeds, '--rows'), seeds(col_seeds, '--cols')
    try:
        styles = sorted(set(parse_range(col_styles))) if col_styles is not None and col_styles.strip() else []
    except ValueError as err:
        raise click.BadParameter(str(err), param_hint='--styles')
    try:
        device = torch.device(device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    except RuntimeError:
        raise cli.UserError(f'--device={device} is not a torch device name (try cpu or cuda).')
    amp = autocast_dtype(resolve_precision(precision, device))
    try:
        G, sampler, _data = load_generator(network_pkl, device=device)
    except SnapshotError as err:
        raise cli.UserError(str(err))
    if col_styles is None:
        styles = list(range(min(7, G.num_ws)))
    bad = [s for s in styles if s >= G.num_ws]
    if bad:
        raise cli.UserError(f'--styles: layer {bad[0]} does not exist; this network has {G.num_ws} w\'s (0-{G.num_ws - 1}).')
    c = torch.zeros([1, G.c_dim], device=device)
    if G.c_dim != 0:
        if class_idx is None or class_idx >= G.c_dim:
            raise cli.UserError(f'this network is conditional: pass --class (0 .. {G.c_dim - 1}).')
        c[:, class_idx] = 1
    elif class_idx is not None:
        raise cli.UserError('--class applies to conditional networks; this one is unconditional.')
    makedirs_or_fail(outdir, '--outdir')

    all_seeds = list(dict.fromkeys(rows + cols))
    with torch.no_grad():
        z = torch.cat([sample_for_seed(sampler, seed, device=device).z for seed in all_seeds])
        ws = G.mapping(z, c.expand(len(all_seeds), -1), truncation_psi=truncation_psi)
    w_of = {seed: ws[i] for i, seed in enumerate(all_seeds)}
    row_ws = torch.stack([w_of[s] for s in rows])
    col_ws = torch.stack([w_of[s] for s in cols])
    jobs = [((r, -1), row_ws[r]) for r in range(len(rows))] + [((-1, k), col_ws[k]) for k in range(len(cols))]
    mixed = mixed_ws(row_ws, col_ws, styles)
    jobs += [((r, k), mixed[r, k]) for r in range(len(rows)) for k in range(len(cols))]

    images = {}
    with Progress(len(jobs), desc='style mixing', unit='image') as progress:
        for (r, k), w in jobs:
            with torch.no_grad(), torch.autocast(device_type=device.type, dtype=amp, enabled=amp is not None):
                img = G.synthesis(w[None], noise_mode=noise_mode)
            img = (img.float() * 127.5 + 128).clamp(0, 255).to(torch.uint8)[0].permute(1, 2, 0).cpu()
            images[r, k] = img
            name = (f'{rows[r]}-{cols[k]}' if r >= 0 and k >= 0 else f'{rows[r]}-{rows[r]}' if k < 0
                    else f'{cols[k]}-{cols[k]}')
            array = img.numpy()
            save_image(PIL.Image.fromarray(array[:, :, 0], 'L') if array.shape[2] == 1 else PIL.Image.fromarray(array, 'RGB'),
                  os.path.join(outdir, f'{name}.png'))
            progress.update(1)
    save_image(grid_image(images, len(rows), len(cols)), os.path.join(outdir, 'grid.png'))
    print(f'wrote {len(jobs) + 1} images to {outdir} (styles {styles or "none"} from the columns)')


if __name__ == '__main__':
    main()

"""How far each code dimension of a dSprites VAE moves the sprite: the traversal grid, in numbers.

For a set of real dSprites images, every code dimension is swept over -3..3 (the VAE run's
traversal range) from the image's posterior mean while the other dimensions stay put, and the
decoder's mean images are measured: the horizontal and vertical travel of the sprite's centroid
(pixels) and the change of its mass (sum of pixel intensities, i.e. scale or disappearance).
A dimension that encodes pos_x moves x a lot and y little; a disentangled VAE has one such
dimension for x and another for y.

    python experiments/vae_traversal_motion.py --network=runs/00000-dsprites-betavae-batch64/vae-snapshot-000020.pkl

Prints one line per dimension, sorted by travel, and writes the table as JSON with --json.
"""

import json
import os
import sys

import click
import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

MIN_MASS = 20.0      # positions of (almost) vanished sprites are noise: ignored


@torch.no_grad()
def traversal_motion(E, Dec, images, value_range=3.0, steps=11):
    """[code_dim, 3]: mean over images of (x travel, y travel, mass change) of the decoded sprite."""
    E, Dec = E.eval(), Dec.eval()
    mu, _logvar = E(images)
    size = images.shape[-1]
    coords = torch.arange(size, dtype=torch.float32)
    motion = np.zeros([E.code_dim, 3])
    for base in mu:
        for dim in range(E.code_dim):
            codes = base.repeat(steps, 1)
            codes[:, dim] = torch.linspace(-value_range, value_range, steps)
            pictures = ((Dec.to_image(Dec(codes)).float() + 1) / 2).mean(dim=1)       # [steps, H, W]
            mass = pictures.sum(dim=(1, 2))
            x = (pictures.sum(dim=1) * coords).sum(dim=1) / mass.clamp(min=1e-6)
            y = (pictures.sum(dim=2) * coords).sum(dim=1) / mass.clamp(min=1e-6)
            seen = mass > MIN_MASS
            if int(seen.sum()) > 1:
                motion[dim, 0] += float(x[seen].max() - x[seen].min())
                motion[dim, 1] += float(y[seen].max() - y[seen].min())
            motion[dim, 2] += float(mass.max() - mass.min())
    return motion / len(mu)


@click.command()
@click.option('--network', 'network_pkl', help='VAE snapshot (vae-snapshot-*.pkl)', required=True, metavar='PKL')
@click.option('--images', 'num_images', help='Real dSprites images to start from', type=click.IntRange(min=1), default=16)
@click.option('--seed', help='Which images', type=int, default=1)
@click.option('--json', 'json_path', help='Also write the table here', metavar='PATH')
def main(network_pkl, num_images, seed, json_path):
    """Measure the sprite's travel per code dimension of a dSprites VAE."""
    from training.procedural import get_builtin
    from training.vae_snapshot import VAESnapshotError, load_vae_snapshot
    try:
        data = load_vae_snapshot(network_pkl)
    except VAESnapshotError as err:
        raise click.ClickException(str(err))
    source = get_builtin('dsprites')
    if (data['E'].img_resolution, data['E'].img_channels) != (source.resolution, source.num_channels):
        raise click.ClickException(f'{network_pkl} was not trained on dSprites (64x64, 1 channel).')
    index = np.random.RandomState(seed).randint(0, source.num_images, size=num_images)
    images = torch.from_numpy(source.images(index)).float() / 127.5 - 1
    motion = traversal_motion(data['E'], data['Dec'], images)
    rows = [dict(dim=d, x_travel=round(float(m[0]), 1), y_travel=round(float(m[1]), 1), mass_change=round(float(m[2])))
            for d, m in enumerate(motion)]
    print(f'{network_pkl}: sprite travel over -3..3 per code dimension, mean of {num_images} images')
    for row in sorted(rows, key=lambda r: -(r['x_travel'] + r['y_travel'])):
        print(f'  dim {row["dim"]}: x {row["x_travel"]:5.1f} px   y {row["y_travel"]:5.1f} px   '
              f'mass {row["mass_change"]:5d}')
    if json_path:
        tmp = json_path + '.tmp'
        with open(tmp, 'w') as f:
            json.dump(dict(network=network_pkl, images=num_images, seed=seed, dims=rows), f, indent=1)
        os.replace(tmp, json_path)


if __name__ == '__main__':
    main()

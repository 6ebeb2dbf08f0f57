"""Dataset speed: how fast the built-in datasets render (and, later, load from zip).

Examples:

    # images/s per built-in dataset in batches of 1000, on one CPU thread
    python benchmarks/datasets.py

    # also render every image of dSprites once and report the real time
    python benchmarks/datasets.py --datasets=dsprites --full

    # refresh the contact sheets shown in the docs
    python benchmarks/datasets.py --sheets=docs/images

    # only the zip loading section, on the full dSprites set (writes ~220 MB to a temp dir)
    python benchmarks/datasets.py --datasets=dsprites --batches=1 --zip-images=737280

Each measurement is a function returning a list of result dicts; `main` runs them and prints one
table per measurement, so a new measurement is one more function plus one line in `main`.
"""

import os
import sys
import time

import click
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from dnnlib.progress import Progress, format_time
from training.procedural import BUILTIN_NAMES, get_builtin, save_contact_sheet


def _single_thread():
    """Limits BLAS/OpenMP pools to one thread so numbers mean 'one core' (shapes3d uses matmul)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:   # comes with scikit-learn; without it the numbers may use several cores
        return None
    return threadpool_limits(limits=1)


def measure_render_throughput(name, batch_size=1000, num_batches=10, seed=0):
    """Renders `num_batches` random batches of `batch_size` images of a built-in dataset.

    Returns a dict: setup_s (construction + first image, e.g. the shapes3d scene cache or the
    digits load), images_per_s (steady state, excluding setup), full_set_s (estimated time to
    render every image once).
    """
    start = time.perf_counter()
    source = get_builtin(name)
    source.images([0])
    setup = time.perf_counter() - start
    rng = np.random.RandomState(seed)
    batches = [rng.randint(0, source.num_images, batch_size) for _ in range(num_batches)]
    source.images(batches[0][:8])   # warm-up outside the timed loop
    start = time.perf_counter()
    for index in batches:
        source.images(index)
    elapsed = time.perf_counter() - start
    rate = batch_size * num_batches / elapsed
    return {'dataset': name, 'num_images': source.num_images, 'batch': batch_size, 'setup_s': setup,
            'images_per_s': rate, 'full_set_s': source.num_images / rate}


def render_full_set(name, batch_size=1000):
    """Renders every image of a built-in dataset once, in index order; returns the wall time."""
    source = get_builtin(name)
    start = time.perf_counter()
    with Progress(source.num_images, desc=f'render {name}', unit='img', interval=10) as progress:
        for begin in range(0, source.num_images, batch_size):
            index = np.arange(begin, min(begin + batch_size, source.num_images))
            source.images(index)
            progress.update(len(index))
    elapsed = time.perf_counter() - start
    return {'dataset': name, 'num_images': source.num_images, 'batch': batch_size, 'seconds': elapsed,
            'images_per_s': source.num_images / elapsed}


def render_section(names, batch_size, num_batches, full):
    rows = [measure_render_throughput(name, batch_size, num_batches) for name in names]
    print('Render throughput (one thread, random indices)')
    print(f'{"dataset":<10} {"images":>8} {"batch":>6} {"setup":>8} {"images/s":>10} {"full set (est.)":>16}')
    for row in rows:
        print(f'{row["dataset"]:<10} {row["num_images"]:>8} {row["batch"]:>6} {row["setup_s"]:>7.2f}s '
              f'{row["images_per_s"]:>10.0f} {format_time(row["full_set_s"]):>16}')
    if full:
        print('\nFull set rendered once (index order)')
        for name in names:
            row = render_full_set(name, batch_size)
            print(f'{row["dataset"]:<10} {row["num_images"]:>8} images in {format_time(row["seconds"])} '
                  f'({row["images_per_s"]:.0f} images/s)')
    return rows


def measure_zip_loading(num_images, batch_size=64, num_workers=(0, 2), seed=0, workdir=None):
    """Writes a random dSprites subset with dataset_tool.py into a temp dir, then times reading it.

    Returns (summary, rows). summary: write time, zip size, and the time to open the zip with
    ImageFolderDataset (zip directory, dataset.json, every PNG header). rows: images/s of each
    reader: random __getitem__ on the zip, and one shuffled DataLoader epoch (at most 10 000 images)
    from the zip and from the on-the-fly built-in, per worker count.
    """
    import tempfile

    import torch

    from dataset_tool import convert_dataset
    from training.dataset import BuiltinDataset, ImageFolderDataset

    with tempfile.TemporaryDirectory(dir=workdir) as temp_dir:
        path = os.path.join(temp_dir, 'dsprites.zip')
        start = time.perf_counter()
        convert_dataset('dsprites', path, max_images=num_images, shuffle=True, seed=seed)
        write_s = time.perf_counter() - start
        start = time.perf_counter()
        dataset = ImageFolderDataset(path)
        open_s = time.perf_counter() - start
        index = np.random.RandomState(seed).randint(0, len(dataset), min(num_images, 5000))
        start = time.perf_counter()
        for i in index:
            dataset[int(i)]
        rows = [{'reader': 'zip, random __getitem__', 'images_per_s': len(index) / (time.perf_counter() - start)}]
        epoch = min(num_images, 10000)
        readers = [('zip', ImageFolderDataset(path, max_size=epoch)),
                   ('built-in dsprites', BuiltinDataset('dsprites', max_size=epoch))]
        for name, reader in readers:
            for workers in num_workers:
                loader = torch.utils.data.DataLoader(reader, batch_size=batch_size, shuffle=True, num_workers=workers,
                                                     generator=torch.Generator().manual_seed(seed))
                start = time.perf_counter()
                count = sum(len(images) for images, _labels in loader)
                rows.append({'reader': f'{name}, DataLoader, {workers} workers',
                             'images_per_s': count / (time.perf_counter() - start)})
        zip_mb = os.path.getsize(path) / 2**20
    summary = {'num_images': num_images, 'write_s': write_s, 'zip_mb': zip_mb, 'open_s': open_s}
    return summary, rows


def zip_section(num_images, batch_size=64):
    summary, rows = measure_zip_loading(num_images, batch_size=batch_size)
    print(f'\nLoading from a zip (random dSprites subset of {num_images} images, batch {batch_size})')
    print(f'write with dataset_tool.py: {format_time(summary["write_s"])} '
          f'({num_images / summary["write_s"]:.0f} images/s), {summary["zip_mb"]:.1f} MB')
    print(f'open (ImageFolderDataset): {summary["open_s"]:.2f}s '
          f'({summary["open_s"] / num_images * 1e6:.1f} us/image)')
    for row in rows:
        print(f'{row["reader"]:<42} {row["images_per_s"]:>8.0f} images/s')
    return summary, rows


@click.command()
@click.option('--datasets', default=','.join(BUILTIN_NAMES), show_default=True,
              help='Comma-separated built-in dataset names.')
@click.option('--batch', 'batch_size', type=click.IntRange(min=1), default=1000, show_default=True,
              help='Images per render call.')
@click.option('--batches', 'num_batches', type=click.IntRange(min=1), default=10, show_default=True,
              help='Timed batches per dataset.')
@click.option('--full', is_flag=True, help='Also render every image of each dataset once.')
@click.option('--sheets', metavar='DIR', default=None,
              help='Write an 8x8 contact sheet <name>_samples.png per dataset into DIR.')
@click.option('--threads', type=click.Choice(['1', 'all']), default='1', show_default=True,
              help='Limit BLAS/OpenMP to one thread, or leave the defaults.')
@click.option('--zip-images', type=click.IntRange(min=0), default=20000, show_default=True,
              help='Write a random dSprites subset of this many images to a temp zip and time loading it '
                   '(0: skip).')
def main(datasets, batch_size, num_batches, full, sheets, threads, zip_images):
    """Measure how fast the built-in datasets render."""
    names = [name.strip() for name in datasets.split(',') if name.strip()]
    unknown = [name for name in names if name not in BUILTIN_NAMES]
    if unknown:
        raise click.BadParameter(f'unknown dataset {unknown[0]!r}; choose from {", ".join(BUILTIN_NAMES)}.',
                                 param_hint='--datasets')
    limiter = _single_thread() if threads == '1' else None
    try:
        render_section(names, batch_size, num_batches, full)
    finally:
        if limiter is not None:
            limiter.unregister()
    if sheets is not None:
        for name in names:
            path = save_contact_sheet(get_builtin(name), os.path.join(sheets, f'{name}_samples.png'))
            print(f'wrote {path}')
    if zip_images:
        zip_section(zip_images)


if __name__ == '__main__':
    main()

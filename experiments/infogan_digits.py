"""InfoGAN on the built-in digits: does the 10-way code find the digit classes? One command, fixed seed.

    OMP_NUM_THREADS=1 python experiments/infogan_digits.py --minutes=10 --outdir=runs/infogan-digits

Trains `train.py --cfg=infogan --cat=10` on `--data=digits` (scikit-learn's 1 797 handwritten
digits at 32x32) for a wall-clock budget (the training loop's abort hook stops it at the next
tick and writes the last snapshot), then measures, with the best one-to-one assignment of
categories to digits (Hungarian algorithm on the confusion matrix, scipy):

- `q_accuracy`: Q's categorical prediction on the 1 797 real digits against their labels, the
  number InfoGAN's paper reports (about 95% on MNIST with full training);
- `generated_accuracy`: for every category, `--per-category` generated images classified by an
  RBF SVM trained on the real digits (at 8x8, the data's native resolution), against the category.

Writes the traversal of the categorical code (one column per category, rows = seeds) to
docs/images/infogan_digits_traversal.png and the numbers to docs/results/infogan_digits.json
(atomically). A time budget makes the kimg reached machine-dependent; the JSON records it.
"""

import json
import os
import sys
import time

import click
import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)


def best_assignment_accuracy(predicted, truth, num_classes=10):
    """(accuracy, mapping category -> label, confusion [K, L]) of the best one-to-one assignment."""
    from scipy.optimize import linear_sum_assignment
    confusion = np.zeros([num_classes, num_classes], dtype=np.int64)
    np.add.at(confusion, (np.asarray(predicted), np.asarray(truth)), 1)
    rows, cols = linear_sum_assignment(-confusion)
    accuracy = confusion[rows, cols].sum() / max(confusion.sum(), 1)
    return float(accuracy), {int(r): int(c) for r, c in zip(rows, cols)}, confusion


def _train(outdir, minutes, seed, kimg, extra):
    import train
    from training import training_loop
    deadline = time.time() + minutes * 60
    original = training_loop.training_loop

    def with_deadline(**kwargs):
        return original(abort_fn=lambda: time.time() > deadline, **kwargs)
    training_loop.training_loop = with_deadline
    args = [f'--outdir={outdir}', '--data=digits', '--cfg=infogan', '--cat=10', '--cont=2', '--nuisance-dim=16',
            '--cbase=2048', '--cmax=32', '--map=2', '--batch=16', '--aug=noaug', f'--kimg={kimg}', '--tick=1',
            '--snap=1000', f'--seed={seed}', '--workers=0'] + list(extra)
    try:
        train.main(args, standalone_mode=False)
    finally:
        training_loop.training_loop = original
    runs = sorted(d for d in os.listdir(outdir) if os.path.isdir(os.path.join(outdir, d)))
    run_dir = os.path.join(outdir, runs[-1])
    snaps = training_loop.list_snapshots(run_dir)
    return run_dir, snaps[-1], args


@torch.no_grad()
def evaluate(snapshot_pkl, per_category, seed):
    from sklearn.svm import SVC

    from training.procedural import get_builtin
    from training.snapshot import load_network_pkl
    snap = load_network_pkl(snapshot_pkl)
    G, Q, sampler = snap['G_ema'].eval(), snap['Q'].eval(), snap['latent']
    digits = get_builtin('digits')
    index = np.arange(digits.num_images)
    images, labels = digits.images(index), digits.labels(index)
    real = torch.from_numpy(images).float() / 127.5 - 1
    predicted = torch.cat([Q(chunk)[:, 0] for chunk in real.split(256)]).long().numpy()
    q_accuracy, q_mapping, q_confusion = best_assignment_accuracy(predicted, labels)

    def small(x):   # [N, 1, 32, 32] in [-1, 1] -> [N, 64] at the digits' native 8x8
        return torch.nn.functional.avg_pool2d(x, 4).flatten(1).numpy()
    classifier = SVC(gamma='scale').fit(small(real), labels)
    gen = torch.Generator().manual_seed(seed)
    categories, digit_of = [], []
    for category in range(10):
        latents = sampler.sample(per_category, generator=gen)
        code = latents.code.clone()
        code[:, 0] = category
        fake = G(sampler.assemble(code, latents.noise).z, torch.zeros([per_category, 0]), noise_mode='const')
        digit_of.append(classifier.predict(small(fake.clamp(-1, 1))))
        categories.append(np.full(per_category, category))
    gen_accuracy, gen_mapping, gen_confusion = best_assignment_accuracy(np.concatenate(categories),
                                                                        np.concatenate(digit_of))
    return dict(q_accuracy=q_accuracy, q_mapping=q_mapping, q_confusion=q_confusion.tolist(),
                generated_accuracy=gen_accuracy, generated_mapping=gen_mapping,
                generated_confusion=gen_confusion.tolist(), classifier='sklearn SVC(gamma=scale) on 8x8 real digits'), snap


def write_traversal_picture(snap, path, seeds=range(8)):
    """Rows = seeds, columns = the 10 categories (noise and continuous codes fixed per row)."""
    from disentangle.traverse import grid_image, render
    from training.latent import sample_for_seed
    G, sampler = snap['G_ema'].eval(), snap['latent']
    rows = []
    for seed in seeds:
        z = sample_for_seed(sampler, seed).z
        rows.append(sampler.set_code(z.repeat(10, 1), 0, torch.arange(10.0)))
    images = render(G, torch.cat(rows))
    image = grid_image(images, len(list(seeds)), 10)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f'{path}.tmp{os.getpid()}.png'
    image.resize((image.width * 2, image.height * 2)).save(tmp)
    os.replace(tmp, path)


@click.command()
@click.option('--outdir', help='Where the training run goes', default='runs/infogan-digits', show_default=True)
@click.option('--minutes', help='Training budget (wall clock)', type=float, default=10, show_default=True)
@click.option('--kimg', help='Upper bound on training length', type=float, default=1000, show_default=True)
@click.option('--seed', help='Random seed (training and evaluation)', type=int, default=0, show_default=True)
@click.option('--per-category', help='Generated images per category for generated_accuracy', type=int, default=200,
              show_default=True)
@click.option('--json', 'json_path', help='Result file', default=os.path.join(REPO, 'docs/results/infogan_digits.json'),
              show_default=True)
@click.option('--image', 'image_path', help='Traversal picture',
              default=os.path.join(REPO, 'docs/images/infogan_digits_traversal.png'), show_default=True)
@click.argument('train_args', nargs=-1)
def main(outdir, minutes, kimg, seed, per_category, json_path, image_path, train_args):
    """Train InfoGAN on digits for a time budget, then report category/digit accuracy (extra args go to train.py)."""
    torch.set_num_threads(int(os.environ.get('OMP_NUM_THREADS', '1')))
    start = time.time()
    run_dir, snapshot_pkl, args = _train(outdir, minutes, seed, kimg, train_args)
    train_seconds = time.time() - start
    results, snap = evaluate(snapshot_pkl, per_category, seed)
    write_traversal_picture(snap, image_path)
    cur_kimg = snap['resume_state']['cur_nimg'] / 1000
    results.update(command='python experiments/infogan_digits.py ' + ' '.join(sys.argv[1:]),
                   train_args=args, run_dir=run_dir, snapshot=snapshot_pkl, kimg=cur_kimg,
                   train_minutes=round(train_seconds / 60, 2), threads=torch.get_num_threads(), seed=seed)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    from idgan_vs_vae import machine_record
    results['machine'] = machine_record()
    os.makedirs(os.path.dirname(json_path), exist_ok=True)
    tmp = f'{json_path}.tmp{os.getpid()}'
    with open(tmp, 'w') as f:
        json.dump(results, f, indent=2)
    os.replace(tmp, json_path)
    print(f'kimg {cur_kimg:.1f} in {train_seconds / 60:.1f} min: Q accuracy on real digits {results["q_accuracy"]:.3f}, '
          f'generated-category accuracy {results["generated_accuracy"]:.3f} -> {json_path}')


if __name__ == '__main__':
    main()

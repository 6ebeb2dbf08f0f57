"""experiments/vae_traversal_motion.py on hand-built encoders and decoders whose answers are known."""

import importlib.util
import os

import numpy as np
import torch

_PATH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'experiments',
                     'vae_traversal_motion.py')
_spec = importlib.util.spec_from_file_location('vae_traversal_motion', _PATH)
exp = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(exp)

SIZE = 64


class CentroidEncoder(torch.nn.Module):
    """mu = (centroid x, centroid y, 0, ...) scaled to about [-1.5, 1.5]; `swap` puts y first."""

    def __init__(self, code_dim=4, swap=False, mix=False):
        super().__init__()
        self.code_dim, self.swap, self.mix = code_dim, swap, mix

    def forward(self, images):
        pictures = (images.float() + 1) / 2
        pictures = pictures.mean(dim=1)
        mass = pictures.sum(dim=(1, 2)).clamp(min=1e-6)
        coords = torch.arange(SIZE, dtype=torch.float32)
        x = (pictures.sum(dim=1) * coords).sum(dim=1) / mass / SIZE * 3 - 1.5
        y = (pictures.sum(dim=2) * coords).sum(dim=1) / mass / SIZE * 3 - 1.5
        if self.mix:                                   # a 45-degree rotation: both codes carry both positions
            x, y = x + y, x - y
        if self.swap:
            x, y = y, x
        mu = torch.zeros(images.shape[0], self.code_dim)
        mu[:, 0], mu[:, 1] = x, y
        return mu, torch.zeros_like(mu)


class BlobDecoder(torch.nn.Module):
    """A bright square whose centre is (code[0], code[1]) mapped onto the frame; other dimensions do nothing."""

    def forward(self, codes):
        centre = ((codes[:, :2].clamp(-3, 3) + 3) / 6 * (SIZE - 12) + 6).round().long()
        images = torch.full((codes.shape[0], 1, SIZE, SIZE), -1.0)
        for i, (cx, cy) in enumerate(centre.tolist()):
            images[i, :, cy - 3:cy + 3, cx - 3:cx + 3] = 1.0
        return images

    @staticmethod
    def to_image(logits):
        return logits


def test_traversal_motion_reads_x_and_y_travel_per_dimension():
    images = torch.full((2, 1, SIZE, SIZE), -1.0)
    images[:, :, 20:26, 30:36] = 1.0
    motion = exp.traversal_motion(CentroidEncoder(), BlobDecoder(), images, steps=7)
    assert motion.shape == (4, 3)
    full = SIZE - 12                                       # the decoder maps -3..3 onto this many pixels
    assert abs(motion[0, 0] - full) <= 1 and motion[0, 1] < 1       # dim 0 moves x only
    assert abs(motion[1, 1] - full) <= 1 and motion[1, 0] < 1       # dim 1 moves y only
    assert np.all(motion[2:] == 0)                                    # unused dimensions move nothing


def test_position_information_finds_the_dimension_of_each_coordinate():
    from training.procedural import get_builtin
    source = get_builtin('dsprites')
    position = exp.position_information(CentroidEncoder(), source, num_images=1500, seed=0)
    summary = exp.separation_summary(position)
    assert summary['pos_x']['best_dim'] == 0 and summary['pos_y']['best_dim'] == 1
    assert summary['clearly_separate'] and summary['pos_x']['gap'] > 0.3 and summary['pos_y']['gap'] > 0.3
    swapped = exp.separation_summary(exp.position_information(CentroidEncoder(swap=True), source, 1500, 0))
    assert swapped['pos_x']['best_dim'] == 1 and swapped['pos_y']['best_dim'] == 0
    # Rotated by 45 degrees, each code carries half of each coordinate: no clear gap for either.
    rotated = exp.separation_summary(exp.position_information(CentroidEncoder(mix=True), source, 1500, 0))
    assert rotated['pos_x']['gap'] < 0.5 * summary['pos_x']['gap']
    assert rotated['pos_y']['gap'] < 0.5 * summary['pos_y']['gap']
    assert rotated['separate'] and not rotated['clearly_separate']


def test_separation_summary_flags_one_dimension_for_both():
    position = dict(pos_x=np.array([0.1, 0.6, 0.2]), pos_y=np.array([0.05, 0.5, 0.3]))
    summary = exp.separation_summary(position)
    assert summary['pos_x'] == dict(best_dim=1, nmi=0.6, runner_up_dim=2, gap=0.4)
    assert summary['pos_y'] == dict(best_dim=1, nmi=0.5, runner_up_dim=2, gap=0.2)
    assert summary['separate'] is False and summary['clearly_separate'] is False
    position['pos_y'] = np.array([0.05, 0.2, 0.3])                  # y's best is dim 2, but dim 1 holds 2/3 of it
    summary = exp.separation_summary(position)
    assert summary['separate'] and not summary['clearly_separate']
    position['pos_y'] = np.array([0.05, 0.1, 0.3])
    assert exp.separation_summary(position)['clearly_separate']

"""Representation functions: uint8 observations [N, C, H, W] -> codes float64 [N, D] from a snapshot's networks.

- VAE snapshots and ID-GAN snapshots carry the encoder `E(x) -> (mu, logvar)` for x in [-1, 1] at
  `E.img_resolution` x `E.img_channels`; the representation is the posterior mean `mu`.
- InfoGAN / InfoGAN-CR snapshots carry the head `Q(x)`; the representation is its code estimate
  (a tensor [N, D], or the first element when Q returns a tuple or list).
Observations are resized to the network's resolution (area averaging when shrinking, as ID-GAN
does before encoding generated images) and grayscale is repeated to RGB when the network wants 3
channels, so a 64x64 encoder can score any dataset with the same factors.
"""

import numpy as np
import torch
import torch.nn.functional as F

from metrics.ground_truth import MetricError


def images_to_network_input(images, resolution, channels, device):
    """uint8 [0, 255] or float [-1, 1] (numpy or torch) [N, C, H, W] -> float32 [N, channels, resolution, resolution]."""
    x = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    x = x.to(device=device, dtype=torch.float32) / 127.5 - 1.0 if not x.is_floating_point() \
        else x.to(device=device, dtype=torch.float32)
    if x.ndim != 4:
        raise MetricError(f'Expected images of shape [N, C, H, W], got {list(x.shape)}.')
    if x.shape[1] != channels:
        if x.shape[1] == 1 and channels == 3:
            x = x.repeat(1, 3, 1, 1)
        elif x.shape[1] == 3 and channels == 1:
            x = x.mean(dim=1, keepdim=True)
        else:
            raise MetricError(f'The network expects {channels}-channel images but the data has {x.shape[1]}; '
                              f'use a dataset with matching channels.')
    if resolution is not None and x.shape[2:] != (resolution, resolution):
        mode = 'area' if x.shape[2] > resolution else 'bilinear'
        x = F.interpolate(x, size=(resolution, resolution), mode=mode,
                          **({} if mode == 'area' else dict(align_corners=False)))
    return x


class NetworkRepresentation:
    """Callable representation function around an encoder-like network (E or Q)."""

    def __init__(self, network, device='cpu', batch_size=256, kind='E'):
        self.network = network.eval().requires_grad_(False).to(device)
        self.device = torch.device(device)
        self.batch_size = int(batch_size)
        self.kind = kind
        self.resolution = getattr(network, 'img_resolution', None)
        self.channels = getattr(network, 'img_channels', None)

    def _codes(self, x):
        out = self.network(x)
        if isinstance(out, (tuple, list)):
            out = out[0]                    # E: (mu, logvar) -> mu; Q: (codes, ...) -> codes
        if isinstance(out, dict):
            raise MetricError(f'{self.kind}(x) returned a dict; a representation needs a code tensor [N, D].')
        return out.reshape(out.shape[0], -1)

    @torch.no_grad()
    def __call__(self, observations):
        codes = []
        for start in range(0, len(observations), self.batch_size):
            batch = observations[start:start + self.batch_size]
            channels = self.channels if self.channels is not None else batch.shape[1]
            x = images_to_network_input(batch, self.resolution, channels, self.device)
            codes.append(self._codes(x).double().cpu().numpy())
        return np.concatenate(codes, axis=0)


def representation_from_snapshot(snapshot, device='cpu', batch_size=256):
    """The representation function of a snapshot dict: its encoder `E`, else its `Q` head."""
    for key in ('E', 'Q'):
        network = snapshot.get(key)
        if network is not None:
            return NetworkRepresentation(network, device=device, batch_size=batch_size, kind=key)
    raise MetricError('The snapshot has no encoder (E) or Q head, which disentanglement metrics need; evaluate a '
                      'VAE, ID-GAN or InfoGAN snapshot, or use the generator-side or fidelity metrics.')

"""The networks InfoGAN and InfoGAN-CR add: the Q head on D's trunk and the contrastive classifier H.

- `QHead(features) -> EasyDict(cat_logits=[[N, K] per group], cont_mean=[N, n_cont],
  cont_logstd=[N, n_cont] or None)`: a small MLP on D's penultimate features (the epilogue fc
  output, `D(img, c, return_features=True)`), as InfoGAN shares D's trunk with Q. Hidden width 128
  as the official InfoGAN-CR code (`q_l_dim`). With `learn_std` the continuous part is a factored
  Gaussian with a learned log-std per code, otherwise the std is fixed at 1 (the official
  InfoGAN-CR choice, a scaled squared error).
- `QNetwork(x) -> codes [N, n_cat + n_cont]` for images x in [-1, 1]: D's trunk plus the head as
  one standalone module (the snapshot key `Q`), so metrics/ and select_model.py can use it as a
  representation. It follows the `code` convention of disentangle/infogan_latent.py: a categorical
  group gives the arg-max category as a float, a continuous code its predicted mean.
- `ContrastiveClassifier` (InfoGAN-CR's H): two images concatenated along channels -> logits over
  the continuous codes; 4 convolutions (32, 32, 64, 64; 4x4, stride 2) + fc 128 + fc k with
  spectral normalisation, as the official dSprites network.

This file is embedded in snapshots (persistent classes): at module level it may only import torch,
numpy, dnnlib and torch_utils.
"""

import numpy as np
import torch

import dnnlib
from torch_utils import misc, persistence

Q_HIDDEN = 128
H_CHANNELS = (32, 32, 64, 64)
H_HIDDEN = 128
LOGSTD_RANGE = (-5.0, 2.0)   # a learned std outside exp(-5)..exp(2) only blows the NLL up


@persistence.persistent_class
class QHead(torch.nn.Module):
    """D's features [N, feature_dim] -> categorical logits, continuous means (and log-stds)."""

    def __init__(self, feature_dim, cat_sizes=(), cont_dim=0, learn_std=False, hidden=Q_HIDDEN):
        super().__init__()
        from networks.stylegan2 import FullyConnectedLayer  # construction only; snapshots carry the class
        self.feature_dim = int(feature_dim)
        self.cat_sizes = tuple(int(k) for k in cat_sizes)
        self.cont_dim = int(cont_dim)
        self.learn_std = bool(learn_std)
        self.code_dim = len(self.cat_sizes) + self.cont_dim
        self.out_dim = sum(self.cat_sizes) + self.cont_dim * (2 if self.learn_std else 1)
        # Equalised learning rate like D's own layers: the head shares D's optimiser and lr.
        self.fc = FullyConnectedLayer(self.feature_dim, int(hidden), activation='lrelu')
        self.out = FullyConnectedLayer(int(hidden), self.out_dim)

    def forward(self, features):
        misc.assert_shape(features, [None, self.feature_dim])
        y = self.out(self.fc(features.float()))
        logits, start = [], 0
        for k in self.cat_sizes:
            logits.append(y[:, start:start + k])
            start += k
        mean = y[:, start:start + self.cont_dim]
        logstd = None
        if self.learn_std:
            logstd = y[:, start + self.cont_dim:].clamp(*LOGSTD_RANGE)
        return dnnlib.EasyDict(cat_logits=logits, cont_mean=mean, cont_logstd=logstd)


@persistence.persistent_class
class QNetwork(torch.nn.Module):
    """Q(x) -> codes [N, code_dim]: D's trunk and the head, usable on its own (module docstring)."""

    def __init__(self, D, head):
        super().__init__()
        self.D = D
        self.head = head
        self.img_resolution = int(D.img_resolution)
        self.img_channels = int(D.img_channels)
        self.code_dim = head.code_dim
        self.cat_sizes = head.cat_sizes
        self.cont_dim = head.cont_dim

    def predict(self, x):
        """The head's outputs (logits, means, log-stds) for images x in [-1, 1]."""
        c = torch.zeros([x.shape[0], self.D.c_dim], device=x.device)
        _logits, features = self.D(x, c, return_features=True)
        return self.head(features)

    def forward(self, x):
        out = self.predict(x)
        columns = [logits.argmax(dim=1, keepdim=True).float() for logits in out.cat_logits]
        return torch.cat(columns + [out.cont_mean.float()], dim=1)


@persistence.persistent_class
class SpectralNormLayer(torch.nn.Module):
    """A conv (4x4, stride 2, padding 1) or linear layer whose weight is divided by its largest
    singular value, estimated by one power iteration per training forward (Miyato et al. 2018)."""

    def __init__(self, in_features, out_features, conv=True):
        super().__init__()
        self.conv = bool(conv)
        shape = [out_features, in_features, 4, 4] if self.conv else [out_features, in_features]
        fan_in = int(np.prod(shape[1:]))
        bound = 1 / np.sqrt(fan_in)
        self.weight = torch.nn.Parameter(torch.empty(shape).uniform_(-bound, bound))
        self.bias = torch.nn.Parameter(torch.zeros([out_features]))
        u = torch.randn([out_features])
        self.register_buffer('u', u / u.norm().clamp_min(1e-12))

    def normalized_weight(self):
        with torch.autocast(device_type=self.weight.device.type, enabled=False):   # fp32 power iteration
            w = self.weight.float().reshape(self.weight.shape[0], -1)
            if self.training:
                with torch.no_grad():
                    v = torch.nn.functional.normalize(w.t() @ self.u, dim=0, eps=1e-12)
                    self.u.copy_(torch.nn.functional.normalize(w @ v, dim=0, eps=1e-12))
            v = torch.nn.functional.normalize(w.t() @ self.u, dim=0, eps=1e-12).detach()
            sigma = torch.dot(self.u, w @ v)
            return self.weight / sigma

    def forward(self, x):
        w = self.normalized_weight().to(x.dtype)
        if self.conv:
            return torch.nn.functional.conv2d(x, w, self.bias.to(x.dtype), stride=2, padding=1)
        return torch.nn.functional.linear(x, w, self.bias.to(x.dtype))


@persistence.persistent_class
class ContrastiveClassifier(torch.nn.Module):
    """H: an image pair [N, 2C, R, R] in [-1, 1] -> logits [N, num_codes] (which code the pair shares)."""

    def __init__(self, img_resolution, img_channels, num_codes, channels=H_CHANNELS, hidden=H_HIDDEN):
        super().__init__()
        self.img_resolution = int(img_resolution)
        self.img_channels = int(img_channels)
        self.num_codes = int(num_codes)
        self.channels = tuple(int(c) for c in channels)
        if self.img_resolution < 2 ** len(self.channels):
            raise ValueError(f'H halves the resolution {len(self.channels)} times; {img_resolution}x{img_resolution} '
                             f'images are too small (at least {2 ** len(self.channels)}).')
        layers, cin = [], 2 * self.img_channels
        for cout in self.channels:
            layers.append(SpectralNormLayer(cin, cout, conv=True))
            cin = cout
        self.convs = torch.nn.ModuleList(layers)
        side = self.img_resolution // 2 ** len(self.channels)
        self.fc = SpectralNormLayer(cin * side * side, int(hidden), conv=False)
        self.out = SpectralNormLayer(int(hidden), self.num_codes, conv=False)

    def forward(self, pairs):
        misc.assert_shape(pairs, [None, 2 * self.img_channels, self.img_resolution, self.img_resolution])
        x = pairs
        for layer in self.convs:
            x = torch.nn.functional.leaky_relu(layer(x), 0.2)
        x = torch.nn.functional.leaky_relu(self.fc(x.flatten(1)), 0.2)
        return self.out(x)

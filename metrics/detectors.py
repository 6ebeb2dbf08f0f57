"""Feature detectors for the fidelity metrics: images [N, C, H, W] -> features float32 [N, F].

- `TorchScriptDetector`: the Inception-v3 (FID, KID) and VGG16 (precision/recall) TorchScript
  networks that the StyleGAN2-ADA ecosystem publishes, loaded by URL through
  `dnnlib.util.open_url` (downloaded once into the dnnlib cache; local paths and file:// URLs
  work too). They take uint8 RGB images [N, 3, H, W] of any size (they resize internally) and
  return their feature vectors when called with `return_features=True`.
- `OracleDetector`: the penultimate features of the dataset's factor oracle (metrics/oracle.py),
  usable offline.
Float images in [-1, 1] are converted to uint8 as StyleGAN2-ADA does; grayscale is repeated to RGB.
"""

import hashlib
import warnings

import torch

import dnnlib
from metrics.generative import images_to_uint8
from metrics.ground_truth import MetricError


class TorchScriptDetector:
    def __init__(self, module, url):
        self.module = module
        self.url = url
        self.name = url.replace('\\', '/').rstrip('/').split('/')[-1].split('?')[0].rsplit('.', 1)[0] or 'detector'
        self.id = f'{self.name}-{hashlib.md5(url.encode("utf-8")).hexdigest()[:8]}'

    @torch.no_grad()
    def __call__(self, images):
        device = next(iter(self.module.parameters()), torch.zeros([])).device
        x = images if images.dtype == torch.uint8 else images_to_uint8(images)
        x = x.to(device)
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)
        return self.module(x, return_features=True).float()


class OracleDetector:
    def __init__(self, oracle):
        self.oracle = oracle
        self.name = 'oracle'
        self.id = f'oracle-{oracle.train_info.get("key", "untracked")}'

    def __call__(self, images):
        return self.oracle.features(images)


_detector_cache = dict()   # (url, device) -> TorchScriptDetector


def get_torchscript_detector(url, device='cpu', verbose=True):
    """The TorchScript detector at `url` (path, file:// or http(s)://), loaded once per process."""
    key = (url, str(device))
    if key not in _detector_cache:
        try:
            with dnnlib.util.open_url(url, verbose=verbose) as f, warnings.catch_warnings():
                warnings.simplefilter('ignore', DeprecationWarning)   # TorchScript is the detectors' published format
                module = torch.jit.load(f, map_location='cpu')
        except Exception as err:   # unreachable host, missing file, not TorchScript: one sentence
            message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise MetricError(f'The feature detector {url} cannot be loaded ({message}); check the URL and the '
                              f'network connection, or pass a local copy with --options=\'{{"detector_url": '
                              f'"path/to/detector.pt"}}\', or use fd_oracle, which needs no download.') from None
        _detector_cache[key] = TorchScriptDetector(module.eval().to(device), url)
    return _detector_cache[key]

"""Image-quality metrics for translated images.

Paired (one output per reference image): `psnr`, `ssim`, `mae`. Each takes two images of equal shape, either
uint8 (or any numeric) HxWxC / HxW arrays on the 0..255 scale, or float tensors in [-1, 1] (CHW or 1CHW), which
are mapped to 0..255 by (t + 1) * 127.5 without rounding; all arithmetic is float64.

Unpaired (two sets of images): `frechet_distance` (FID, Heusel et al. 2017, as pytorch-fid computes it) and
`kid` (KID, Binkowski et al. 2018, as torch-fidelity computes it) on features from a `FeatureExtractor`,
by default the FID Inception-v3 (`gantk.nn.inception`), its input made by `fid_input` (clean-fid's resize or
pytorch-fid's). `PROTOCOL` records how numbers were made.

LPIPS (Zhang et al. 2018) with a distance network such as `gantk.nn.lpips.LPIPS`: `lpips` (mean over pairs)
and `lpips_diversity` (the BicycleGAN README's protocol: consecutive pairs of one input's samples).
"""
from __future__ import annotations

from typing import Callable, Iterable

import numpy as np
import torch
from PIL import Image
from scipy import linalg, ndimage

from gantk.errors import GantkError

# SSIM constants of Wang et al. 2004 with scikit-image's Gaussian-window options.
SSIM_K1, SSIM_K2, SSIM_SIGMA, SSIM_TRUNCATE = 0.01, 0.03, 1.5, 3.5
FRECHET_METHODS = ("eigh", "sqrtm")  # Tr sqrtm(S1 S2): symmetric eigendecompositions | scipy (pytorch-fid)

# how the numbers are made; evaluate writes it beside every result
PROTOCOL = {
    "paired_scale": "8-bit, 0..255 (tensors in [-1, 1]: (t + 1) * 127.5), float64",
    "psnr": "10 log10(255^2 / MSE over all pixels and channels)",
    "ssim": "Wang et al. 2004, Gaussian window sigma 1.5 truncated at 3.5 sigma (11 px), reflect padding, "
            "K1 0.01, K2 0.03, population covariance, data_range 255, border of 5 px cropped, mean over "
            "channels (= skimage structural_similarity(gaussian_weights=True, sigma=1.5, "
            "use_sample_covariance=False, data_range=255, channel_axis=-1))",
    "mae": "mean |a - b| on the 0..255 scale",
    "features": "pytorch-fid's Inception-v3 pool3 (2048-d); 8-bit RGB files -> [-1, 1], resized to 299x299 "
                "bilinear (align_corners=False, no antialiasing)",
    "fid_resize_clean": "clean-fid's 'clean' mode: each channel of the 8-bit RGB image as a float32 PIL image, "
                        "resized to 299x299 bicubic (PIL, antialiased), clipped to 0..255, then x / 127.5 - 1 "
                        "into pytorch-fid's Inception-v3 pool3 (2048-d) without its own resize",
    "fid_resize_legacy-pytorch": "pytorch-fid's protocol: 8-bit RGB -> x / 127.5 - 1, resized to 299x299 inside "
                                 "the network (bilinear, align_corners=False, no antialiasing), Inception-v3 pool3 "
                                 "(2048-d)",
    "fid": "||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)), sample covariance (N - 1), float64; "
           "Tr sqrtm(S1 S2) = sum of sqrt(eigenvalues of sqrt(S1) S2 sqrt(S1)) by symmetric eigendecompositions, "
           "or with fewer images than dimensions the sum of singular values of A B^T / sqrt((n1 - 1)(n2 - 1)) "
           "(A, B the centred features); both exact, also for singular covariances (pytorch-fid's scipy sqrtm "
           "route agrees to 1e-6 relative)",
    "kid": "unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3 over random subsets (without replacement) of both "
           "sets; mean and std over the subsets",
    "lpips": "LPIPS v0.1 (Zhang et al. 2018): 8-bit RGB -> [-1, 1] at full resolution (no resizing); per "
             "layer: channels unit-normalised, squared difference, published 1x1 linear head, spatial mean; "
             "sum over the 5 layers; mean over pairs",
    "lpips_diversity": "BicycleGAN README: per input, LPIPS between consecutive random samples (01-02, 02-03, "
                       "..., K-1 pairs for K samples; the README uses 20 samples, 19 pairs), mean over its "
                       "pairs, then mean over inputs. The README's figures used LPIPS v0.0, these v0.1",
    "diversity_l1": "gantk translate's diversity: mean |a - b| over all pairs of one input's samples, images "
                    "in [-1, 1]; mean over inputs",
}

FID_RESIZE = ("clean", "legacy-pytorch")  # image -> 299x299 for the FID Inception: clean-fid | pytorch-fid

FeatureExtractor = Callable[[torch.Tensor], torch.Tensor]
"""NCHW float images in [-1, 1] -> (N, D) features (e.g. `gantk.nn.inception.FIDInceptionV3`)."""
Distance = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""Two NCHW float image batches in [-1, 1] -> (N,) distances (e.g. `gantk.nn.lpips.LPIPS`)."""


def as_255(x) -> np.ndarray:
    """An image as a float64 HxW(xC) array on the 0..255 scale: tensors in [-1, 1] (CHW or 1CHW) are moved
    to HWC and mapped by (t + 1) * 127.5; arrays are taken as they are (uint8 HxWxC)."""
    if isinstance(x, torch.Tensor):
        t = x.detach().cpu().double()
        t = t[0] if t.dim() == 4 else t
        return ((t.permute(1, 2, 0) if t.dim() == 3 else t) + 1).numpy() * 127.5
    return np.asarray(x, dtype=np.float64)


def _pair(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = as_255(a), as_255(b)
    if a.shape != b.shape:
        raise GantkError(f"images differ in shape: {a.shape} vs {b.shape}")
    return a, b


def mae(a, b) -> float:
    """Mean absolute error on the 0..255 scale (uint8 HxWxC arrays or [-1, 1] tensors)."""
    a, b = _pair(a, b)
    return float(np.mean(np.abs(a - b)))


def psnr(a, b, data_range: float = 255) -> float:
    """Peak signal-to-noise ratio in dB (uint8 HxWxC arrays or [-1, 1] tensors, compared on 0..255);
    inf for identical images. Equals skimage's peak_signal_noise_ratio(a, b, data_range=data_range)."""
    a, b = _pair(a, b)
    mse = np.mean((a - b) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(data_range ** 2 / mse))


def ssim(a, b, data_range: float = 255) -> float:
    """Mean structural similarity (uint8 HxWxC or HxW arrays, or [-1, 1] tensors, on 0..255) with an 11 px
    Gaussian window, averaged over channels: skimage's structural_similarity(..., gaussian_weights=True,
    sigma=1.5, use_sample_covariance=False, data_range=255, channel_axis=-1). Images need sides >= 11 px."""
    a, b = _pair(a, b)
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    pad = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
    if min(a.shape[:2]) < 2 * pad + 1:
        raise GantkError(f"SSIM needs images of at least {2 * pad + 1} px a side, got {a.shape[:2]}")
    c1, c2 = (SSIM_K1 * data_range) ** 2, (SSIM_K2 * data_range) ** 2
    scores = []
    for x, y in zip(np.moveaxis(a, -1, 0), np.moveaxis(b, -1, 0)):
        mx, my, mxx, myy, mxy = (ndimage.gaussian_filter(v, SSIM_SIGMA, mode="reflect", truncate=SSIM_TRUNCATE)
                                 for v in (x, y, x * x, y * y, x * y))
        vx, vy, cxy = mxx - mx * mx, myy - my * my, mxy - mx * my
        s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx ** 2 + my ** 2 + c1) * (vx + vy + c2))
        scores.append(s[pad:-pad, pad:-pad].mean())
    return float(np.mean(scores))


def feature_statistics(feats) -> tuple[np.ndarray, np.ndarray]:
    """(mean, covariance) of (N, D) features in float64, covariance with N - 1 as np.cov (N >= 2)."""
    f = np.asarray(feats, dtype=np.float64)
    if f.ndim != 2 or len(f) < 2:
        raise GantkError(f"feature statistics need at least 2 feature vectors, got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False)


def frechet_distance(mu1, sigma1, mu2, sigma2, method: str = "eigh", eps: float = 1e-6) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2):
    ||mu1 - mu2||^2 + Tr(sigma1 + sigma2 - 2 sqrtm(sigma1 sigma2)). `method` "eigh" (default, exact for any
    PSD covariances): Tr sqrtm(S1 S2) = sum of sqrt(eigenvalues of sqrt(S1) S2 sqrt(S1)),
    symmetric eigendecompositions only, tiny negative eigenvalues from rounding clipped to 0. "sqrtm":
    pytorch-fid's route (scipy sqrtm of the product, slower; `eps` on both diagonals when it is
    not finite, small imaginary parts dropped, large ones an error), kept for cross-checks."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (len(mu1), len(mu1)):
        raise GantkError(f"Fréchet distance: shapes do not match: mu {mu1.shape}, {mu2.shape}; "
                         f"sigma {s1.shape}, {s2.shape}")
    if method not in FRECHET_METHODS:
        raise GantkError(f"Fréchet distance: method must be one of {', '.join(FRECHET_METHODS)}, got {method!r}")
    diff = mu1 - mu2
    tr_covmean = _trace_sqrtm_eigh(s1, s2) if method == "eigh" else _trace_sqrtm_scipy(s1, s2, eps)
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)



def _psd_eigenvalues(m: np.ndarray) -> np.ndarray:
    return np.clip(np.linalg.eigvalsh((m + m.T) / 2), 0, None)


def _trace_sqrtm_eigh(s1: np.ndarray, s2: np.ndarray) -> float:
    """Tr sqrtm(S1 S2) for symmetric PSD S1, S2: S1 S2 is similar to the PSD matrix sqrt(S1) S2 sqrt(S1)."""
    w, v = np.linalg.eigh((s1 + s1.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    return float(np.sqrt(_psd_eigenvalues(root @ s2 @ root)).sum())


def _trace_sqrtm_scipy(s1: np.ndarray, s2: np.ndarray, eps: float) -> float:
    """pytorch-fid's Tr sqrtm(S1 S2): scipy's general sqrtm of the product, `eps` offset when singular."""
    covmean = linalg.sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        offset = np.eye(len(s1)) * eps
        covmean = linalg.sqrtm((s1 + offset) @ (s2 + offset))
    if np.iscomplexobj(covmean):
        if not np.allclose(np.diagonal(covmean).imag, 0, atol=1e-3):
            raise GantkError(f"Fréchet distance: sqrtm has an imaginary component "
                             f"{np.max(np.abs(covmean.imag)):.3g} (too few images for the feature size?)")
        covmean = covmean.real
    return float(np.trace(covmean))


def polynomial_mmd2(f1: np.ndarray, f2: np.ndarray, degree: int = 3, gamma: float | None = None,
                    coef0: float = 1) -> float:
    """Unbiased MMD^2 of two feature sets with k(x, y) = (gamma x.y + coef0)^degree, gamma 1/D by default:
    mean of k over distinct pairs within each set, minus twice the mean over all cross pairs."""
    k = _polynomial_kernel(f1.shape[1], degree, gamma, coef0)
    return _mmd2(k(f1, f1), k(f2, f2), k(f1, f2))


def _polynomial_kernel(dim: int, degree: int, gamma: float | None, coef0: float):
    gamma = 1.0 / dim if gamma is None else gamma
    return lambda x, y: (x @ y.T * gamma + coef0) ** degree


def _mmd2(k11: np.ndarray, k22: np.ndarray, k12: np.ndarray) -> float:
    """Unbiased MMD^2 from the kernel matrices within and across two sets."""
    m, n = len(k11), len(k22)
    within = lambda kk, s: (kk.sum() - np.trace(kk)) / (s * (s - 1))  # noqa: E731
    return float(within(k11, m) + within(k22, n) - 2 * k12.mean())


KID_FULL_KERNELS = 5000  # sets up to this size: kernel matrices computed once, subsets index into them


def kid(feats1, feats2, subsets: int = 100, subset_size: int = 1000, degree: int = 3, gamma: float | None = None,
        coef0: float = 1, seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: (mean, std) of `polynomial_mmd2` over `subsets` random subsets of
    `subset_size` features drawn without replacement from each set (numpy RandomState(seed), as torch-fidelity).
    A `subset_size` above the smaller set's size is lowered to it (`kid_subset_size` gives the value used).
    Sets of up to KID_FULL_KERNELS features have their kernels computed once (the same values, far faster)."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    size = kid_subset_size(len(f1), len(f2), subset_size)
    rng = np.random.RandomState(seed)
    draws = [(rng.choice(len(f1), size, replace=False), rng.choice(len(f2), size, replace=False))
             for _ in range(subsets)]
    if max(len(f1), len(f2)) <= KID_FULL_KERNELS:
        k = _polynomial_kernel(f1.shape[1], degree, gamma, coef0)
        k11, k22, k12 = k(f1, f1), k(f2, f2), k(f1, f2)
        mmds = [_mmd2(k11[np.ix_(i, i)], k22[np.ix_(j, j)], k12[np.ix_(i, j)]) for i, j in draws]
    else:
        mmds = [polynomial_mmd2(f1[i], f2[j], degree, gamma, coef0) for i, j in draws]
    return float(np.mean(mmds)), float(np.std(mmds))


def kid_subset_size(n1: int, n2: int, subset_size: int = 1000) -> int:
    """The KID subset size used for sets of n1 and n2 features: min(subset_size, n1, n2), at least 2."""
    size = min(subset_size, n1, n2)
    if size < 2:
        raise GantkError(f"KID needs at least 2 images in each set, got {n1} and {n2}")
    return size


def clean_resize(img: np.ndarray, size: int = 299) -> np.ndarray:
    """clean-fid's "clean" resize of a uint8 HxWx3 image: each channel as a float32 PIL image, bicubic
    (antialiased when shrinking) to size x size, clipped to 0..255; float32 size x size x 3."""
    img = np.asarray(img)
    channels = [np.asarray(Image.fromarray(img[:, :, c].astype(np.float32)).resize((size, size), Image.BICUBIC))
                for c in range(img.shape[2])]
    return np.clip(np.stack(channels, axis=-1), 0, 255)


def fid_input(img: np.ndarray, resize: str = "clean") -> torch.Tensor:
    """A uint8 HxWx3 image as the FID Inception's CHW input in [-1, 1] (x / 127.5 - 1): resized to 299x299 by
    `clean_resize` ("clean"), or at its own size for the network's bilinear resize ("legacy-pytorch")."""
    if resize not in FID_RESIZE:
        raise GantkError(f"--fid-resize must be one of {', '.join(FID_RESIZE)}, got {resize!r}")
    a = clean_resize(img) if resize == "clean" else np.asarray(img, dtype=np.float32)
    return torch.from_numpy(a.transpose(2, 0, 1).copy()).div_(127.5).sub_(1.0)


@torch.inference_mode()
def extract_features(extractor: FeatureExtractor, images: Iterable[torch.Tensor], batch_size: int = 32,
                     device="cpu") -> np.ndarray:
    """(N, D) float64 features of CHW images in [-1, 1] (any iterable, e.g. lazily loaded files),
    run in batches of equal-size images."""
    feats, batch = [], []

    def flush():
        if batch:
            feats.append(extractor(torch.stack(batch).to(device)).double().cpu().numpy())
            batch.clear()
    for img in images:
        if batch and (len(batch) == batch_size or img.shape != batch[0].shape):
            flush()
        batch.append(img)
    flush()
    return np.concatenate(feats) if feats else np.zeros((0, 0))


def fid_from_features(feats1, feats2) -> float:
    """FID of two (N, D) feature sets. With fewer features than dimensions in a set (e.g. 1000 images, 2048-d)
    the exact low-rank route: with A, B the centred features, S1 S2 = A^T (A B^T) B / ((n1 - 1)(n2 - 1)), so
    Tr sqrtm(S1 S2) is the sum of the singular values of A B^T (n1 x n2) over sqrt((n1 - 1)(n2 - 1)); else
    `frechet_distance` of the statistics."""
    f1, f2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    if min(len(f1), len(f2)) < 2 or f1.ndim != 2 or min(len(f1), len(f2)) >= f1.shape[1]:
        return frechet_distance(*feature_statistics(f1), *feature_statistics(f2))
    mu1, mu2 = f1.mean(axis=0), f2.mean(axis=0)
    a, b = f1 - mu1, f2 - mu2
    n1, n2 = len(a) - 1, len(b) - 1
    tr_covmean = np.linalg.svd(a @ b.T, compute_uv=False).sum() / np.sqrt(n1 * n2)
    return float((mu1 - mu2) @ (mu1 - mu2) + np.sum(a * a) / n1 + np.sum(b * b) / n2 - 2 * tr_covmean)


def as_batch(x) -> torch.Tensor:
    """Images as an NCHW float tensor in [-1, 1]: tensors (CHW or NCHW) are taken as they are, uint8 HxWxC
    arrays (or a list of them) are mapped by x / 127.5 - 1."""
    if isinstance(x, torch.Tensor):
        return (x[None] if x.dim() == 3 else x).float()
    a = np.asarray(x, dtype=np.float32)
    a = a[None] if a.ndim == 3 else a
    return torch.from_numpy(a).permute(0, 3, 1, 2) / 127.5 - 1


def _device(net) -> torch.device | str:
    """Where a distance network's parameters live (CPU for plain functions or parameterless modules)."""
    params = getattr(net, "parameters", None)
    return next(params(), torch.empty(0)).device if params else "cpu"


@torch.no_grad()
def lpips(net: Distance, a, b) -> float:
    """Mean LPIPS over the pairs (a[i], b[i]): tensors in [-1, 1] (CHW or NCHW) or uint8 HxWxC arrays;
    0 for identical images. `net` is e.g. `gantk.nn.lpips.load_lpips(...)`."""
    a, b = as_batch(a), as_batch(b)
    if a.shape != b.shape:
        raise GantkError(f"images differ in shape: {tuple(a.shape)} vs {tuple(b.shape)}")
    dev = _device(net)
    return float(net(a.to(dev), b.to(dev)).double().mean())


def lpips_diversity(net: Distance, groups: Iterable) -> tuple[float, list[float]]:
    """The BicycleGAN README's diversity: for each input's samples s_1..s_K (K >= 2, in order), the mean
    LPIPS of (s_1, s_2), (s_2, s_3), ..., (s_K-1, s_K); returns (mean over inputs, per-input means)."""
    per_input = []
    for samples in groups:
        s = torch.cat([as_batch(x) for x in samples])
        if len(s) < 2:
            raise GantkError(f"LPIPS diversity needs at least 2 samples per input, got {len(s)}")
        per_input.append(lpips(net, s[:-1], s[1:]))
    if not per_input:
        raise GantkError("LPIPS diversity: no inputs")
    return float(np.mean(per_input)), per_input

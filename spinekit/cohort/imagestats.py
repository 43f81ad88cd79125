"""Per-image acquisition statistics: what tells scanners and protocols apart in a cohort.

Spacing, field of view, grid size, orientation, intensity percentiles and a normalised intensity histogram,
plus the DICOM scanner tags when the image is a DICOM series. Clustering these per-subject features exposes
acquisition groups (scanner, protocol, reconstruction) whose measurements may differ systematically: the
harmonisation problem of multi-site cohorts, approached here as the issue describes the iBack work (cluster
image statistics to reveal scanner/protocol groups; no citation could be checked offline).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

#: intensity percentiles stored per image.
PERCENTILES = (1, 5, 25, 50, 75, 95, 99)
#: histogram bins between the image's own 1st and 99th percentile (shape of the intensity distribution).
HISTOGRAM_BINS = 32
#: at most this many voxels are sampled for the statistics (a regular stride keeps it deterministic).
MAX_SAMPLES = 2_000_000
#: DICOM tags that name the acquisition (manufacturer, model, field strength, slice thickness, kernel, sequence).
DICOM_TAGS = {
    "manufacturer": "0008|0070",
    "model": "0008|1090",
    "field_strength_t": "0018|0087",
    "slice_thickness_mm": "0018|0050",
    "kernel": "0018|1210",
    "sequence": "0018|0024",
    "modality_tag": "0008|0060",
}

#: numeric features used to cluster acquisitions (see :func:`feature_columns`).
GEOMETRY_FEATURES = ("spacing_i", "spacing_j", "spacing_k", "fov_i_mm", "fov_j_mm", "fov_k_mm")


def feature_columns() -> list[str]:
    return [*GEOMETRY_FEATURES, *(f"p{p}" for p in PERCENTILES)]


def _dicom_tags(path: Path) -> dict:
    import SimpleITK as sitk

    tags: dict = {}
    if not path.is_dir():
        return tags
    series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(path))
    if not series:
        return tags
    files = sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(path), series[0])
    reader = sitk.ImageFileReader()
    reader.SetFileName(files[0])
    reader.ReadImageInformation()
    for name, tag in DICOM_TAGS.items():
        if reader.HasMetaDataKey(tag):
            tags[name] = reader.GetMetaData(tag).strip()
    return tags


def image_statistics(path: Path) -> dict:
    """Acquisition statistics of one image (JSON-ready dict).

    Raises:
        ImageReadError, ImageGeometryError, ImageContentError: from :func:`spinekit.io.read_volume`.
    """
    from spinekit.io import orientation_code, read_volume

    volume = read_volume(path)
    values = volume.array.reshape(-1)
    stride = max(1, values.size // MAX_SAMPLES)
    sample = values[::stride].astype(np.float64)
    percentiles = np.percentile(sample, PERCENTILES)
    low, high = float(percentiles[0]), float(percentiles[-1])
    if high > low:
        hist, _ = np.histogram(sample, bins=HISTOGRAM_BINS, range=(low, high))
        hist = hist / max(1, hist.sum())
    else:
        hist = np.zeros(HISTOGRAM_BINS)
    size = volume.shape_ijk
    stats = {
        "path": str(path),
        "size_i": size[0],
        "size_j": size[1],
        "size_k": size[2],
        **{f"spacing_{a}": s for a, s in zip("ijk", volume.spacing, strict=True)},
        **{f"fov_{a}_mm": n * s for a, n, s in zip("ijk", size, volume.spacing, strict=True)},
        "orientation": orientation_code(volume),
        "dtype": str(volume.array.dtype),
        "min": float(values.min()),
        "max": float(values.max()),
        "mean": float(sample.mean()),
        **{f"p{p}": float(v) for p, v in zip(PERCENTILES, percentiles, strict=True)},
        "histogram": [round(float(h), 6) for h in hist],
        # Air is -1000 HU on the Hounsfield scale; MRI magnitudes are never strongly negative.
        "modality_guess": "ct" if low < -500 else "mri",
    }
    stats.update(_dicom_tags(Path(path)))
    return stats

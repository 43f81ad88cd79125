"""Read and write images and label maps with their physical geometry (SimpleITK).

Everything in spinekit works on :class:`Volume`: a numpy array in SimpleITK order
``[k, j, i]`` (slice, row, column) plus the geometry that maps voxel index ``(i, j, k)``
to patient LPS millimetres: ``p = origin + direction @ (spacing * (i, j, k))``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from spinekit.errors import GridMismatchError, ImageContentError, ImageGeometryError, ImageReadError

#: Spacing outside this range (mm) is treated as a broken header, not as anatomy.
SPACING_RANGE_MM = (0.05, 20.0)
#: Tolerance for orthonormality of the direction cosine matrix.
DIRECTION_TOLERANCE = 1e-3
#: Tolerance (mm) when comparing the grids of an image and its label map.
GRID_TOLERANCE_MM = 1e-2


@dataclass(frozen=True)
class Volume:
    """A 3D image on a physical grid.

    Attributes:
        array: voxel values, shape ``(nk, nj, ni)`` (SimpleITK's ``GetArrayFromImage`` order).
        spacing: voxel size along i, j, k in mm.
        origin: LPS position (mm) of voxel (0, 0, 0).
        direction: 3x3 matrix whose columns are the LPS directions of the i, j, k axes.
    """

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        object.__setattr__(self, "direction", np.asarray(self.direction, dtype=float).reshape(3, 3))

    @property
    def shape_ijk(self) -> tuple[int, int, int]:
        """Grid size along i, j, k."""
        return tuple(int(n) for n in self.array.shape[::-1])

    @property
    def voxel_volume_mm3(self) -> float:
        return float(np.prod(self.spacing))

    def index_to_lps(self, ijk: np.ndarray) -> np.ndarray:
        """Continuous voxel indices ``(..., 3)`` in (i, j, k) order to LPS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return np.asarray(self.origin) + (ijk * np.asarray(self.spacing)) @ self.direction.T

    def lps_to_index(self, lps: np.ndarray) -> np.ndarray:
        """LPS mm ``(..., 3)`` to continuous voxel indices in (i, j, k) order."""
        lps = np.asarray(lps, dtype=float)
        return ((lps - np.asarray(self.origin)) @ self.direction) / np.asarray(self.spacing)

    def axis_lps(self, axis: int) -> np.ndarray:
        """Unit LPS direction of grid axis ``axis`` (0 = i, 1 = j, 2 = k)."""
        return self.direction[:, axis].copy()

    def with_array(self, array: np.ndarray) -> Volume:
        """Same grid, other voxel values (e.g. a label map of this image)."""
        if array.shape != self.array.shape:
            raise GridMismatchError(f"array shape {array.shape} differs from grid shape {self.array.shape}")
        return Volume(array, self.spacing, self.origin, self.direction)

    def same_grid(self, other: Volume, tolerance_mm: float = GRID_TOLERANCE_MM) -> bool:
        """True when both volumes have the same size, spacing, origin and direction."""
        return (
            self.array.shape == other.array.shape
            and np.allclose(self.spacing, other.spacing, atol=tolerance_mm)
            and np.allclose(self.origin, other.origin, atol=tolerance_mm)
            and np.allclose(self.direction, other.direction, atol=DIRECTION_TOLERANCE)
        )

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(self.array)
        image.SetSpacing(self.spacing)
        image.SetOrigin(self.origin)
        image.SetDirection(tuple(self.direction.ravel()))
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> Volume:
        if image.GetDimension() != 3:
            raise ImageGeometryError(
                f"a {image.GetDimension()}D image was given where a 3D volume is needed; "
                "pass the whole series or a 3D NIfTI/NRRD/MHA file"
            )
        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ImageGeometryError("a multi-component (vector/RGB) image was given; pass a scalar image")
        return cls(
            sitk.GetArrayFromImage(image),
            image.GetSpacing(),
            image.GetOrigin(),
            np.asarray(image.GetDirection()).reshape(3, 3),
        )


def check_geometry(volume: Volume, name: str = "image") -> None:
    """Raise :class:`ImageGeometryError` for spacing or direction we refuse to compute on."""
    spacing = np.asarray(volume.spacing)
    low, high = SPACING_RANGE_MM
    if not np.all(np.isfinite(spacing)) or np.any(spacing <= 0):
        raise ImageGeometryError(
            f"{name} has zero, negative or non-finite voxel spacing {tuple(spacing)} mm; "
            "fix the header (e.g. with SimpleITK SetSpacing) or pass --spacing"
        )
    if np.any(spacing < low) or np.any(spacing > high):
        raise ImageGeometryError(
            f"{name} has absurd voxel spacing {tuple(np.round(spacing, 4))} mm (allowed {low}-{high} mm per axis); "
            "the header is probably broken: fix it or pass --spacing"
        )
    direction = volume.direction
    if not np.allclose(direction.T @ direction, np.eye(3), atol=DIRECTION_TOLERANCE):
        raise ImageGeometryError(
            f"{name} has a non-orthonormal direction matrix {np.round(direction, 4).tolist()}; "
            "re-export the image with a valid orientation (dcm2niix, Slicer) or reset it to identity"
        )
    if permuted_spacing_suspected(volume):
        raise ImageGeometryError(
            f"{name} has spacing {tuple(np.round(spacing, 4))} mm on a grid of {volume.shape_ijk} voxels: the thick "
            "spacing sits on a long axis and a thin one on the axis with fewest voxels, which is a permuted header. "
            "Repair it with spinekit.io.repair_permuted_spacing (CLI: --fix-spacing permute) or pass --spacing"
        )


def permuted_spacing_suspected(volume: Volume, max_ratio: float = 5.0) -> bool:
    """True for headers whose spacing was written in the wrong axis order.

    Slice stacks have their thickest spacing on the axis with the fewest voxels. A header
    whose thickest spacing is on the longest axis while the shortest axis (< 32 voxels) spans
    under 10 mm is the malformed case found in the public ivd_masks (4.4, 0.43, 0.43 mm on a
    107 x 315 x 9 grid).
    """
    sizes = np.asarray(volume.shape_ijk)
    spacing = np.asarray(volume.spacing)
    if spacing.max() / spacing.min() < max_ratio:
        return False
    shortest = int(np.argmin(sizes))
    extent_shortest = sizes[shortest] * spacing[shortest]
    return sizes[shortest] < 32 and extent_shortest < 10.0 and int(np.argmax(spacing)) != shortest


def repair_permuted_spacing(volume: Volume) -> Volume:
    """Reassign the spacing values so the largest goes to the axis with the fewest voxels.

    The documented fix for :func:`permuted_spacing_suspected` headers; the set of spacing
    values is kept, only their order changes.
    """
    sizes = np.asarray(volume.shape_ijk)
    order_axes = np.argsort(sizes)  # fewest voxels first
    values = sorted(volume.spacing, reverse=True)  # thickest first
    spacing = [0.0, 0.0, 0.0]
    for axis, value in zip(order_axes, values, strict=True):
        spacing[int(axis)] = value
    return Volume(volume.array, tuple(spacing), volume.origin, volume.direction)


def check_finite(volume: Volume, name: str = "image") -> None:
    """Raise :class:`ImageContentError` when the voxels contain NaN or Inf."""
    if np.issubdtype(volume.array.dtype, np.floating):
        bad = ~np.isfinite(volume.array)
        if bad.any():
            raise ImageContentError(
                f"{name} contains {int(bad.sum())} NaN/Inf voxels; replace them (e.g. numpy.nan_to_num with the "
                "background value) before running spinekit"
            )


def check_label_grid(image: Volume, labels: Volume, tolerance_mm: float = GRID_TOLERANCE_MM) -> None:
    """Raise :class:`GridMismatchError` unless ``labels`` lies on the grid of ``image``."""
    if not image.same_grid(labels, tolerance_mm):
        raise GridMismatchError(
            "label map grid does not match its image: "
            f"size {labels.shape_ijk} vs {image.shape_ijk}, spacing {labels.spacing} vs {image.spacing}, "
            f"origin {labels.origin} vs {image.origin}. Resample the labels onto the image with "
            "spinekit.io.resample_labels_to(labels, image) (nearest neighbour) or export both from the same scan"
        )


def _read_sitk(path: Path) -> sitk.Image:
    if not path.exists():
        raise ImageReadError(f"{path} does not exist")
    try:
        if path.is_dir():
            reader = sitk.ImageSeriesReader()
            series = reader.GetGDCMSeriesIDs(str(path))
            if not series:
                raise ImageReadError(f"{path} is a folder without a DICOM series; pass a DICOM folder or an image file")
            files = reader.GetGDCMSeriesFileNames(str(path), series[0])
            reader.SetFileNames(files)
            return reader.Execute()
        return sitk.ReadImage(str(path))
    except RuntimeError as exc:
        first_line = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise ImageReadError(
            f"{path} is not an image SimpleITK can read (NIfTI, NRRD, MHA or a DICOM folder expected): {first_line}"
        ) from None


def read_volume(
    path: str | os.PathLike,
    *,
    check: bool = True,
    fix_spacing: str = "error",
    spacing: Sequence[float] | None = None,
) -> Volume:
    """Read NIfTI, NRRD, MHA or a DICOM series folder into a :class:`Volume`.

    Args:
        path: image file or DICOM folder.
        check: run :func:`check_geometry` and :func:`check_finite`.
        fix_spacing: ``"error"`` (default) refuses a permuted-spacing header; ``"permute"`` repairs it.
        spacing: override the header spacing (mm, i/j/k order) when the header is known to be wrong.
    """
    volume = Volume.from_sitk(_read_sitk(Path(path)))
    if spacing is not None:
        volume = Volume(volume.array, tuple(spacing), volume.origin, volume.direction)
    if fix_spacing == "permute" and permuted_spacing_suspected(volume):
        volume = repair_permuted_spacing(volume)
    elif fix_spacing not in ("error", "permute"):
        raise ValueError(f"fix_spacing must be 'error' or 'permute', not {fix_spacing!r}")
    if check:
        check_geometry(volume, str(path))
        check_finite(volume, str(path))
    return volume


def read_labels(path: str | os.PathLike, image: Volume | None = None, **kwargs) -> Volume:
    """Read a label map as integers; with ``image``, also check it lies on the image's grid."""
    labels = read_volume(path, **kwargs)
    array = labels.array
    if np.issubdtype(array.dtype, np.floating):
        rounded = np.rint(array)
        if not np.allclose(array, rounded, atol=1e-3):
            raise ImageContentError(f"{path} has non-integer values; a label map must hold integer labels")
        array = rounded
    labels = labels.with_array(array.astype(np.int16 if array.max(initial=0) < 32767 else np.int32))
    if image is not None:
        check_label_grid(image, labels)
    return labels


def atomic_path(path: str | os.PathLike) -> Path:
    """A temporary sibling of ``path`` with the same suffixes (for write-then-rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs must be readable like any other file
    return Path(tmp)


def write_volume(volume: Volume, path: str | os.PathLike, compress: bool = True) -> Path:
    """Write atomically (temporary file, then rename) so a crash never leaves half a file."""
    path = Path(path)
    tmp = atomic_path(path)
    try:
        sitk.WriteImage(volume.to_sitk(), str(tmp), useCompression=compress)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_labels(labels: Volume, path: str | os.PathLike) -> Path:
    """Write a label map as the smallest unsigned/signed integer type that holds its labels."""
    array = labels.array
    dtype = np.uint8 if array.min(initial=0) >= 0 and array.max(initial=0) < 256 else np.int16
    return write_volume(labels.with_array(array.astype(dtype)), path)


def resample_to_spacing(volume: Volume, spacing: Sequence[float], is_label: bool = False) -> Volume:
    """Resample onto a grid with ``spacing`` (mm) covering the same physical extent."""
    image = volume.to_sitk()
    new_spacing = [float(s) for s in spacing]
    size = [
        max(1, int(round(n * s / t))) for n, s, t in zip(image.GetSize(), image.GetSpacing(), new_spacing, strict=True)
    ]
    # Keep the physical centre of the first voxel's corner: shift origin by half a voxel difference.
    direction = volume.direction
    corner = np.asarray(volume.origin) - direction @ (0.5 * np.asarray(volume.spacing))
    origin = corner + direction @ (0.5 * np.asarray(new_spacing))
    resampled = sitk.Resample(
        image,
        size,
        sitk.Transform(),
        sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear,
        tuple(origin),
        new_spacing,
        tuple(direction.ravel()),
        0,
        image.GetPixelID(),
    )
    return Volume.from_sitk(resampled)


def resample_like(volume: Volume, reference: Volume, is_label: bool = False, default: float = 0) -> Volume:
    """Resample ``volume`` onto the grid of ``reference`` (identity transform, physical space)."""
    resampled = sitk.Resample(
        volume.to_sitk(),
        reference.to_sitk(),
        sitk.Transform(),
        sitk.sitkNearestNeighbor if is_label else sitk.sitkLinear,
        default,
    )
    return Volume.from_sitk(resampled)


def resample_labels_to(labels: Volume, image: Volume) -> Volume:
    """Nearest-neighbour resampling of a label map onto an image's grid."""
    return resample_like(labels, image, is_label=True)


def reorient(volume: Volume, orientation: str = "LPS") -> Volume:
    """Permute/flip axes so i, j, k point along ``orientation`` (DICOM letters, e.g. "LPS", "RAS").

    Lossless: voxel values are only reordered and the geometry is updated to match.
    """
    oriented = sitk.DICOMOrient(volume.to_sitk(), orientation.upper())
    return Volume.from_sitk(oriented)


def orientation_code(volume: Volume) -> str:
    """Three-letter DICOM orientation code (e.g. "LPS") of the i, j, k axes."""
    return sitk.DICOMOrientImageFilter_GetOrientationFromDirectionCosines(tuple(volume.direction.ravel()))


def write_png(figure, path: str | os.PathLike) -> Path:
    """Save a matplotlib figure as PNG atomically and close it."""
    import matplotlib.pyplot as plt

    path = Path(path)
    tmp = atomic_path(path)
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, path)
    finally:
        plt.close(figure)
        tmp.unlink(missing_ok=True)
    return path

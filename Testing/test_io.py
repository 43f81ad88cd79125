"""io: geometry is kept, bad input gets its own clear error."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from spinekit import io
from spinekit.errors import GridMismatchError, ImageContentError, ImageGeometryError, ImageReadError

OBLIQUE = sitk.VersorTransform((0.2, 0.3, 0.9), 0.4).GetMatrix()


def _volume(direction=OBLIQUE, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 25.0, 300.0), dtype=np.float32) -> io.Volume:
    array = np.arange(4 * 5 * 6, dtype=dtype).reshape(4, 5, 6)
    return io.Volume(array, spacing, origin, np.asarray(direction).reshape(3, 3))


@pytest.mark.parametrize("suffix", [".nii.gz", ".nrrd", ".mha"])
def test_roundtrip_keeps_geometry(tmp_path, suffix):
    volume = _volume()
    path = io.write_volume(volume, tmp_path / f"image{suffix}")
    back = io.read_volume(path)
    np.testing.assert_array_equal(back.array, volume.array)
    np.testing.assert_allclose(back.spacing, volume.spacing, atol=1e-5)
    np.testing.assert_allclose(back.origin, volume.origin, atol=1e-4)
    np.testing.assert_allclose(back.direction, volume.direction, atol=1e-5)


def test_index_to_lps_matches_simpleitk():
    volume = _volume()
    image = volume.to_sitk()
    ijk = (3.0, 1.5, 2.0)
    np.testing.assert_allclose(volume.index_to_lps(ijk), image.TransformContinuousIndexToPhysicalPoint(ijk), atol=1e-9)
    np.testing.assert_allclose(volume.lps_to_index(volume.index_to_lps(ijk)), ijk, atol=1e-9)


def test_dicom_series_reads_as_3d(shared_data):
    volume = io.read_volume(shared_data / "ct_dicom_t11_t12" / "dicom")
    assert volume.shape_ijk == (512, 512, 20)
    np.testing.assert_allclose(volume.spacing, (0.9765625, 0.9765625, 2.0), atol=1e-4)


def test_not_an_image(tmp_path):
    path = tmp_path / "notes.nii.gz"
    path.write_bytes(b"this is not an image")
    with pytest.raises(ImageReadError, match="not an image"):
        io.read_volume(path)
    with pytest.raises(ImageReadError, match="does not exist"):
        io.read_volume(tmp_path / "missing.nii.gz")


def test_2d_image_refused(tmp_path):
    path = tmp_path / "slice.nii.gz"
    sitk.WriteImage(sitk.Image(20, 20, sitk.sitkInt16), str(path))
    with pytest.raises(ImageGeometryError, match="2D image"):
        io.read_volume(path)


def test_non_orthonormal_direction_refused():
    with pytest.raises(ImageGeometryError, match="non-orthonormal"):
        io.check_geometry(_volume(direction=(1, 0, 0, 0.5, 1, 0, 0, 0, 1)))


@pytest.mark.parametrize("spacing", [(0.0, 1.0, 1.0), (1.0, 1.0, 150.0), (1e-4, 1.0, 1.0)])
def test_zero_or_absurd_spacing_refused(spacing):
    with pytest.raises(ImageGeometryError, match="spacing"):
        io.check_geometry(_volume(spacing=spacing))


def test_nan_refused():
    volume = _volume()
    array = volume.array.copy()
    array[1, 2, 3] = np.nan
    with pytest.raises(ImageContentError, match="1 NaN"):
        io.check_finite(volume.with_array(array))


def test_label_grid_mismatch():
    image = _volume()
    shifted = io.Volume(image.array, image.spacing, (0.0, 0.0, 0.0), image.direction)
    with pytest.raises(GridMismatchError, match="resample_labels_to"):
        io.check_label_grid(image, shifted)
    io.check_label_grid(image, image)


def test_permuted_spacing_header_detected_and_repaired(shared_data):
    """The public ivd_masks carry spacing (4.4, 0.43, 0.43) on a 107 x 315 x 9 grid: refused, then repaired."""
    path = shared_data / "ivd_masks" / "10_Labels.nii"
    with pytest.raises(ImageGeometryError, match="permuted header"):
        io.read_labels(path)
    repaired = io.read_labels(path, fix_spacing="permute")
    np.testing.assert_allclose(repaired.spacing, (0.4296875, 0.4296875, 4.4), atol=1e-6)
    assert sorted(np.unique(repaired.array).tolist()) == [0, 51, 102, 153, 204, 255]


def test_resample_to_spacing_keeps_physical_extent():
    volume = _volume(direction=np.eye(3), spacing=(1.0, 1.0, 1.0), origin=(0, 0, 0))
    coarse = io.resample_to_spacing(volume, (2.0, 2.0, 2.0))
    assert coarse.shape_ijk == (3, 2, 2)
    corner_in = np.asarray(volume.origin) - 0.5
    corner_out = np.asarray(coarse.origin) - 1.0
    np.testing.assert_allclose(corner_in, corner_out)


def test_reorient_is_lossless():
    volume = _volume()
    reoriented = io.reorient(volume, "RAS")
    assert io.orientation_code(reoriented) == "RAS"
    # the same physical point holds the same value
    ijk = np.array([2, 3, 1])
    value = volume.array[ijk[2], ijk[1], ijk[0]]
    back = np.rint(reoriented.lps_to_index(volume.index_to_lps(ijk))).astype(int)
    assert reoriented.array[back[2], back[1], back[0]] == value


def test_write_is_atomic_on_failure(tmp_path, monkeypatch):
    target = tmp_path / "out.nii.gz"
    io.write_volume(_volume(), target)
    before = target.read_bytes()

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(io.sitk, "WriteImage", broken)
    with pytest.raises(RuntimeError):
        io.write_volume(_volume(dtype=np.int16), target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["out.nii.gz"]

"""Analytic spine shapes with exact heights on oblique grids (builders shared by the morphometry tests).

Each vertebra: an elliptic-cylinder body whose height varies linearly from posterior (Hp) to
anterior (Ha), two pedicles, a lamina and a spinous process around an empty canal. Discs fill
the gap between bodies. Everything is voxelised by evaluating the shapes at the voxel centres'
LPS positions, so any grid direction and origin can be used.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pytest

from spinekit.io import Volume


def rotation(axis: np.ndarray, degrees: float) -> np.ndarray:
    """Rodrigues rotation matrix."""
    axis = np.asarray(axis, float) / np.linalg.norm(axis)
    angle = np.radians(degrees)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(angle) * k + (1 - np.cos(angle)) * k @ k


OBLIQUE = rotation([1.0, 2.0, 0.5], 23.0)


@dataclass
class VertebraSpec:
    label: int
    centre: np.ndarray  # body centre, LPS mm
    superior: np.ndarray
    anterior: np.ndarray
    height_anterior: float = 27.0
    height_posterior: float = 27.0
    half_width: float = 22.0  # along right
    half_depth: float = 17.0  # along anterior
    posterior_elements: bool = True

    @property
    def right(self) -> np.ndarray:
        return np.cross(self.anterior, self.superior)

    def height_at(self, fraction: float) -> float:
        """Height at ``fraction`` of the depth from the posterior wall."""
        return self.height_posterior + (self.height_anterior - self.height_posterior) * fraction


@dataclass
class Shapes:
    spine: Volume
    vertebrae: list[VertebraSpec]
    discs: dict[int, float] = field(default_factory=dict)  # disc label -> height (mm)


def make_grid(centre: np.ndarray, size_mm: tuple[float, float, float], spacing: float, direction: np.ndarray) -> Volume:
    shape_ijk = [int(np.ceil(s / spacing)) for s in size_mm]
    half = (np.asarray(shape_ijk) - 1) * spacing / 2
    origin = np.asarray(centre) - direction @ half
    array = np.zeros(shape_ijk[::-1], np.int16)
    return Volume(array, (spacing, spacing, spacing), origin, direction)


def grid_points(volume: Volume) -> np.ndarray:
    nk, nj, ni = volume.array.shape
    k, j, i = np.meshgrid(np.arange(nk), np.arange(nj), np.arange(ni), indexing="ij")
    return volume.index_to_lps(np.stack([i, j, k], axis=-1).astype(float))


def _local(points: np.ndarray, spec: VertebraSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    d = points - spec.centre
    return d @ spec.right, d @ spec.anterior, d @ spec.superior


def vertebra_mask(points: np.ndarray, spec: VertebraSpec) -> tuple[np.ndarray, np.ndarray]:
    """(whole vertebra, body) masks."""
    x, y, z = _local(points, spec)
    fraction = np.clip((y + spec.half_depth) / (2 * spec.half_depth), 0, 1)
    half_h = 0.5 * (spec.height_posterior + (spec.height_anterior - spec.height_posterior) * fraction)
    body = ((x / spec.half_width) ** 2 + (y / spec.half_depth) ** 2 <= 1.0) & (np.abs(z) <= half_h)
    whole = body.copy()
    if spec.posterior_elements:
        b = spec.half_depth
        hp = spec.height_posterior
        pedicle = (np.abs(np.abs(x) - 11.0) <= 4.0) & (y <= -b + 2) & (y >= -b - 14) & (np.abs(z) <= hp / 4)
        lamina = (np.abs(x) <= 16.0) & (y <= -b - 14) & (y >= -b - 20) & (np.abs(z) <= hp / 3)
        spinous = (np.abs(x) <= 3.0) & (y <= -b - 20) & (y >= -b - 42) & (np.abs(z) <= hp / 4)
        transverse = (np.abs(x) <= 38.0) & (y <= -b - 6) & (y >= -b - 14) & (np.abs(z) <= 5.0)
        whole |= pedicle | lamina | spinous | transverse
    return whole, body


def straight_spine(
    labels: tuple[int, ...] = (22, 23, 24),
    spacing: float = 1.0,
    direction: np.ndarray = OBLIQUE,
    tilt_deg: float = 12.0,
    body_height: float = 27.0,
    disc_height: float = 9.0,
    origin_shift: tuple[float, float, float] = (31.7, -148.2, 402.5),
    wedge: dict[int, tuple[float, float]] | None = None,
    with_discs: bool = True,
    width_mm: float = 120.0,
) -> Shapes:
    """Vertebrae stacked along an axis tilted ``tilt_deg`` from patient superior, discs in between."""
    superior = rotation([1.0, 0.0, 0.0], tilt_deg) @ np.array([0.0, 0.0, 1.0])
    anterior = rotation([1.0, 0.0, 0.0], tilt_deg) @ np.array([0.0, -1.0, 0.0])
    centre0 = np.asarray(origin_shift, float)
    pitch = body_height + disc_height
    specs = []
    for n, v in enumerate(labels):
        ha, hp = (wedge or {}).get(v, (body_height, body_height))
        specs.append(VertebraSpec(v, centre0 - n * pitch * superior, superior, anterior, ha, hp))
    middle = centre0 - 0.5 * (len(labels) - 1) * pitch * superior + 15.0 * -anterior
    size = (width_mm, width_mm, len(labels) * pitch + 50.0)
    volume = make_grid(middle, size, spacing, direction)
    points = grid_points(volume)
    array = np.zeros(volume.array.shape, np.int16)
    discs = {}
    for n, spec in enumerate(specs):
        whole, _ = vertebra_mask(points, spec)
        array[whole & (array == 0)] = spec.label
        if with_discs and n + 1 < len(specs):
            disc_centre = spec.centre - 0.5 * pitch * superior
            d = points - disc_centre
            x, y, z = d @ spec.right, d @ anterior, d @ superior
            disc = ((x / 21.0) ** 2 + (y / 16.0) ** 2 <= 1.0) & (np.abs(z) <= disc_height / 2)
            array[disc & (array == 0)] = 100 + spec.label
            discs[100 + spec.label] = disc_height
    return Shapes(volume.with_array(array), specs, discs)


@pytest.fixture(scope="module")
def straight() -> Shapes:
    return straight_spine()


def test_shapes_have_labels(straight: Shapes) -> None:
    values = set(np.unique(straight.spine.array)) - {0}
    assert values == {22, 23, 24, 122, 123}


def curved_spine(
    tilts: dict[int, float], spacing: float = 1.5, direction: np.ndarray = OBLIQUE, pitch: float = 36.0
) -> Shapes:
    """Vertebrae (no discs) each tilted by its own angle (deg, about patient left; + tilts superior anteriorly).

    The sacrum (26) is a body without posterior elements; its superior endplate normal is its axis.
    """
    left = np.array([1.0, 0.0, 0.0])
    specs = []
    centre = np.array([12.0, -40.0, 150.0])
    previous = None
    for v, tilt in tilts.items():
        superior = rotation(left, tilt) @ np.array([0.0, 0.0, 1.0])
        anterior = rotation(left, tilt) @ np.array([0.0, -1.0, 0.0])
        if previous is not None:
            step = previous.superior + superior
            centre = previous.centre - pitch * step / np.linalg.norm(step)
        spec = VertebraSpec(v, centre.copy(), superior, anterior, posterior_elements=v != 26)
        specs.append(spec)
        previous = spec
    middle = np.mean([s.centre for s in specs], axis=0) + 10.0 * np.array([0.0, 1.0, 0.0])
    extent = np.ptp([s.centre for s in specs], axis=0)
    size = (130.0, 130.0 + extent[1], extent[2] + 80.0)
    volume = make_grid(middle, size, spacing, direction)
    points = grid_points(volume)
    array = np.zeros(volume.array.shape, np.int16)
    for spec in specs:
        whole, _ = vertebra_mask(points, spec)
        array[whole & (array == 0)] = spec.label
    return Shapes(volume.with_array(array), specs)


def add_muscles(shapes: Shapes, radii: dict[int, tuple[float, float, float]]) -> Volume:
    """Muscle map on the spine grid: elliptic cylinders parallel to the (straight) spine axis.

    ``radii``: label -> (half-width along right, half-depth along anterior, lateral offset along right);
    each cylinder sits 10 mm posterior to the body centres (erector-like) unless the offset is negative in depth.
    """
    spec = shapes.vertebrae[0]
    points = grid_points(shapes.spine)
    d = points - spec.centre
    x, y = d @ spec.right, d @ spec.anterior
    array = np.zeros(shapes.spine.array.shape, np.int16)
    for value, (a, b, offset) in radii.items():
        centre_y = -52.0 if value >= 5 else -5.0
        inside = ((x - offset) / a) ** 2 + ((y - centre_y) / b) ** 2 <= 1.0
        array[inside & (shapes.spine.array == 0)] = value
    return shapes.spine.with_array(array)

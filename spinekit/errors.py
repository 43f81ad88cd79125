"""Exception types whose messages name the problem and the fix."""

from __future__ import annotations


class SpinekitError(Exception):
    """Base class: every error we raise on purpose is one of these."""


class ImageReadError(SpinekitError):
    """A file could not be read as a medical image."""


class ImageGeometryError(SpinekitError):
    """Spacing, direction, origin or dimensionality that we refuse to compute on."""


class ImageContentError(SpinekitError):
    """Voxel values that would make results silently wrong (NaN, Inf)."""


class GridMismatchError(SpinekitError):
    """A label map whose grid does not match its image."""


class LabelError(SpinekitError):
    """Unknown label, unknown label source, or a label map we cannot interpret."""


class InputError(SpinekitError):
    """Invalid user input (arguments, manifest, subject data)."""

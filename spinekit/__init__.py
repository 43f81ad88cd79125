"""spinekit: the pure-Python core of the SpineBiomech 3D Slicer extension."""

from __future__ import annotations

__version__ = "0.1.0"

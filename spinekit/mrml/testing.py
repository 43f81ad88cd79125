"""Small phantoms with exact truth for the modules' self-tests (built once per process)."""

from __future__ import annotations

from functools import lru_cache

from spinekit.io import Volume


@lru_cache(maxsize=1)
def small_phantom():
    """L2-L4 CT phantom (``spinekit.phantom.Phantom``: ``.image``, ``.spine``, ``.muscles``, ``.truth``), 2 mm voxels.

    Cropped to the spine (``field_of_view="spine"``): about 80 x 90 x 100 voxels, built in about a second.
    """
    from spinekit.phantom import PhantomConfig, make_phantom

    return make_phantom(PhantomConfig(levels="L2-L4", spacing=(2.0, 2.0, 2.0), field_of_view="spine"))


@lru_cache(maxsize=1)
def small_followup():
    """A follow-up of :func:`small_phantom` with a known rigid motion per vertebra (``truth["followup"]``)."""
    from spinekit.phantom import FollowupConfig, make_followup

    return make_followup(small_phantom(), FollowupConfig(max_rotation_deg=8.0, max_translation_mm=10.0))


def small_spine() -> tuple[Volume, Volume]:
    """(CT image, spine labels) of :func:`small_phantom`."""
    phantom = small_phantom()
    return phantom.image, phantom.spine

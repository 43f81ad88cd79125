"""Small spine image + labels for the modules' self-tests (phantom when available, else a block model)."""

from __future__ import annotations

import numpy as np

from spinekit import labels as spine_labels
from spinekit.io import Volume


def small_spine() -> tuple[Volume, Volume]:
    """(CT-like image, spine labels) of L3-L5 with discs L3/L4, L4/L5 at 2 mm spacing.

    Uses ``spinekit.phantom.make_phantom`` when it exists and returns ``.image``/``.labels``; otherwise
    blocks of cancellous-bone intensity (200 HU) in soft tissue (40 HU) with exact labels.
    """
    try:
        from spinekit.phantom import make_phantom

        phantom = make_phantom()
        return phantom.image, phantom.labels
    except (ImportError, AttributeError, TypeError):
        pass
    labels = np.zeros((40, 24, 24), dtype=np.int16)
    for index, (vertebra, disc) in enumerate(((22, 122), (23, 123), (24, None))):
        k0 = 2 + 12 * index
        labels[k0 : k0 + 8, 6:18, 6:18] = vertebra
        if disc:
            labels[k0 + 8 : k0 + 12, 6:18, 6:18] = disc
    labels[2:36, 18:21, 10:14] = spine_labels.CANAL
    image = np.where(labels == 0, 40, 200).astype(np.int16)
    image[np.isin(labels, (122, 123))] = 90
    geometry = {"spacing": (2.0, 2.0, 2.0), "origin": (-24.0, -24.0, -40.0)}
    return Volume(image, **geometry), Volume(labels, **geometry)

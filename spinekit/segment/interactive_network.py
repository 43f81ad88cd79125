"""The segmentation network applied inside an interactive-correction window (DeepEdit guidance channels)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from spinekit.errors import InputError
from spinekit.io import Volume
from spinekit.segment.clicks import Click

if TYPE_CHECKING:
    from spinekit.segment.interactive import InteractiveSession
    from spinekit.segment.interactive_types import ClickWindow


class WindowNetwork:
    """The segmentation network applied to a click's window on its working grid, with DeepEdit guidance.

    The image is brought to the network's grid once per session (:func:`spinekit.segment.inference.to_network_grid`,
    LPS, isotropic ``spacing_mm``) and normalised over the body region exactly as automatic inference does
    (:func:`spinekit.segment.synthesis.normalise_real` on :func:`spinekit.segment.inference.body_roi`); each click
    then costs one forward pass over a small cube and a linear resampling of one probability map.
    """

    def __init__(self, network, config, grid: Volume, task: str, device: str = "cpu"):
        self.network = network
        self.config = config
        self.grid = grid
        self.task = task
        self.device = device
        self.multiple = 2 ** len(config.strides)

    @classmethod
    def create(cls, image: Volume, model, task: str, models_dir=None, device: str = "cpu") -> WindowNetwork:
        from spinekit.segment.inference import body_roi, to_network_grid
        from spinekit.segment.networks import load_model
        from spinekit.segment.synthesis import normalise_real

        if isinstance(model, (str, Path)):
            network, config, _ = load_model(str(model), models_dir, device)
        else:
            network, config = model[0], model[1]
            network.to(device).eval()
        if config.task != task:
            raise InputError(f"the model segments {config.task!r} but the session corrects {task!r}; pass its model")
        grid = to_network_grid(image, config.spacing_mm)
        roi = body_roi(grid)
        start_ijk = np.array([roi[2].start, roi[1].start, roi[0].start], dtype=float)
        crop = Volume(normalise_real(grid.array[roi]), grid.spacing, grid.index_to_lps(start_ijk), grid.direction)
        return cls(network, config, crop, task, device)

    def class_index(self, structure: int) -> int:
        """Network class of one of our label values (0 when the network does not segment it)."""
        from spinekit.segment.dataset import muscle_targets, spine_targets

        targets = spine_targets if self.task == "spine" else muscle_targets
        value = int(targets(np.array([[[structure]]]))[0, 0, 0])
        return value if 0 < value < self.config.n_classes else 0

    def probability(
        self, session: InteractiveSession, window: ClickWindow, structure: int, clicks: list[Click]
    ) -> np.ndarray | None:
        """Probability of ``structure``'s class on the session's window, given ``clicks`` (None: not a class)."""
        import SimpleITK as sitk
        import torch

        from spinekit.segment.guidance import guidance_channels

        index = self.class_index(structure)
        if index == 0:
            return None
        sl = window.slices
        corners = np.array([[i, j, k] for i in (sl[2].start, sl[2].stop - 1) for j in (sl[1].start, sl[1].stop - 1)
                            for k in (sl[0].start, sl[0].stop - 1)], dtype=float)  # fmt: skip
        net = self.grid.lps_to_index(session.image.index_to_lps(corners))
        lo = np.floor(net.min(axis=0)).astype(int) - 1
        size = np.ceil(net.max(axis=0)).astype(int) + 2 - lo
        size = np.maximum(self.multiple * np.ceil(size / self.multiple).astype(int), 2 * self.multiple)
        crop = _crop_padded(self.grid.array, lo[::-1], size[::-1])
        guidance: dict[str, list[list[int]]] = {}
        for click in clicks:
            if click.structure != structure:
                continue
            ijk = np.rint(self.grid.lps_to_index(np.asarray(click.point_lps))).astype(int) - lo
            if np.all((ijk >= 0) & (ijk < size)):
                name = self.config.classes[index] if click.positive else self.config.classes[0]
                guidance.setdefault(name, []).append([int(v) for v in ijk[::-1]])
        x = guidance_channels(crop, guidance, self.config.classes)
        with torch.inference_mode():
            logits = self.network(torch.from_numpy(x[None]).to(self.device))
            probability = torch.softmax(logits, dim=1)[0, index].float().cpu().numpy()
        source = sitk.GetImageFromArray(probability)
        source.SetSpacing(self.grid.spacing)
        source.SetOrigin(tuple(self.grid.index_to_lps(lo.astype(float))))
        source.SetDirection(tuple(self.grid.direction.ravel()))
        start = np.array([sl[2].start, sl[1].start, sl[0].start], dtype=float)
        shape_ijk = [sl[2].stop - sl[2].start, sl[1].stop - sl[1].start, sl[0].stop - sl[0].start]
        out = sitk.Resample(
            source, shape_ijk, sitk.Transform(), sitk.sitkLinear, tuple(session.image.index_to_lps(start)),
            session.image.spacing, tuple(session.image.direction.ravel()), 0.0, sitk.sitkFloat32,
        )  # fmt: skip
        return sitk.GetArrayFromImage(out)


def _crop_padded(array: np.ndarray, lo, size) -> np.ndarray:
    """``array[lo:lo + size]`` with zeros where the box leaves the array."""
    out = np.zeros(tuple(int(s) for s in size), dtype=np.float32)
    src = tuple(slice(max(int(a), 0), min(int(a + n), m)) for a, n, m in zip(lo, size, array.shape, strict=True))
    dst = tuple(slice(s.start - int(a), s.stop - int(a)) for s, a in zip(src, lo, strict=True))
    if all(s.stop > s.start for s in src):
        out[dst] = array[src]
    return out

"""Network definitions, task configurations and weight loading for our segmentation models.

The network is MONAI's ``UNet`` (Kerfoot et al. 2019, residual units): at 3 mm isotropic and channels
(8, 16, 32, 64) it has about 0.2 M parameters, trains at well under a second per 64^3 patch on one CPU core and
keeps the shipped weights under 1 MB. A DynUNet (nnU-Net topology, Isensee et al. 2021) is the drop-in choice when
a GPU budget allows deep supervision and larger patches; ``architecture="dynunet"`` selects it.

DeepEdit-ready (Diaz-Pinto et al. 2022, MONAI Label): the input is the image plus one guidance channel per class
(background included), the channel layout of ``monai.apps.deepedit.transforms.AddGuidanceSignalDeepEditd``; the
guidance channels are zero in automatic mode, and training fills them with simulated clicks on a fraction of samples.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path

from spinekit.errors import InputError

log = logging.getLogger(__name__)

MODELS_DIR = Path(__file__).resolve().parents[1] / "models"


@dataclass(frozen=True)
class TaskConfig:
    """What one network segments and at which resolution.

    Attributes:
        task: "spine" or "muscles".
        classes: semantic class names, index = network output channel (0 = background).
        spacing_mm: isotropic working resolution. 3 mm keeps a lumbar spine inside a 64^3 patch with context
            (TotalSegmentator's "fast" models use 3 mm for the same reason; Wasserthal et al. 2023).
        patch: training/inference patch size in voxels.
        channels, strides, num_res_units, architecture: network shape.
    """

    task: str
    classes: tuple[str, ...]
    spacing_mm: float = 3.0
    patch: tuple[int, int, int] = (64, 64, 64)
    channels: tuple[int, ...] = (8, 16, 32, 64)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 1
    architecture: str = "unet"
    extra: dict = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def in_channels(self) -> int:
        """Image + one DeepEdit guidance channel per class (background included)."""
        return 1 + self.n_classes

    def to_json(self) -> dict:
        data = asdict(self)
        data["classes"] = list(self.classes)
        return data

    @classmethod
    def from_json(cls, data: dict) -> TaskConfig:
        keys = {f for f in cls.__dataclass_fields__}
        clean = {k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items() if k in keys}
        return cls(**clean)


#: Semantic classes of the spine network. Vertebra instances and levels come from :mod:`instances`.
SPINE_CLASSES = ("background", "vertebra", "sacrum", "disc", "canal")
#: Side-agnostic muscle classes; left/right is assigned by position relative to the spine midline.
MUSCLE_CLASSES = ("background", "psoas", "quadratus_lumborum", "multifidus", "erector_spinae")

TASKS: dict[str, TaskConfig] = {
    "spine": TaskConfig("spine", SPINE_CLASSES),
    "muscles": TaskConfig("muscles", MUSCLE_CLASSES),
}


def task_config(task: str) -> TaskConfig:
    if task not in TASKS:
        raise InputError(f"unknown task {task!r}; choose one of {sorted(TASKS)}")
    return TASKS[task]


def build_network(config: TaskConfig):
    """The MONAI network for ``config`` (untrained)."""
    from monai.networks.nets import DynUNet, UNet

    if config.architecture == "unet":
        return UNet(
            spatial_dims=3,
            in_channels=config.in_channels,
            out_channels=config.n_classes,
            channels=config.channels,
            strides=config.strides,
            num_res_units=config.num_res_units,
            norm="instance",
        )
    if config.architecture == "dynunet":
        kernels = [[3, 3, 3]] * (len(config.strides) + 1)
        strides = [[1, 1, 1]] + [[s, s, s] for s in config.strides]
        return DynUNet(
            3, config.in_channels, config.n_classes, kernels, strides, strides[1:], filters=list(config.channels)
        )
    raise InputError(f"unknown architecture {config.architecture!r}; use 'unet' or 'dynunet'")


def model_paths(name: str, models_dir: Path | None = None) -> tuple[Path, Path]:
    """Weights and config paths of the shipped model ``name`` (e.g. "spine")."""
    base = Path(models_dir) if models_dir is not None else MODELS_DIR
    return base / f"{name}.pt", base / f"{name}.json"


def load_model(name: str, models_dir: Path | None = None, device: str = "cpu"):
    """Load a shipped model: returns ``(network in eval mode, TaskConfig, metadata dict)``.

    Weights are read with ``torch.load(..., weights_only=True)`` (no pickled code is executed).
    """
    import torch

    weights, config_path = model_paths(name, models_dir)
    if not weights.is_file() or not config_path.is_file():
        raise InputError(
            f"model {name!r} is not installed: expected {weights} and {config_path}. Train one with "
            f"`spinekit train --task {name} --out DIR` and copy DIR/{name}.pt and DIR/{name}.json there, "
            "or use --backend totalsegmentator"
        )
    meta = json.loads(config_path.read_text())
    config = TaskConfig.from_json(meta["config"])
    network = build_network(config)
    state = torch.load(weights, map_location=device, weights_only=True)
    network.load_state_dict(state)
    network.to(device).eval()
    return network, config, meta

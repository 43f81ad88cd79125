"""First-use installation of spinekit's dependencies into Slicer's Python, after the user agrees.

Follows SlicerTotalSegmentator (Lasso et al.): ask before installing, install torch through the PyTorch
extension (``PyTorchUtils``) so the build matches the GPU, skip what Slicer already ships, never install
inside a module's ``setup()``. The asking and installing functions are injected, so this runs headless.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Callable, Sequence

from spinekit.errors import InputError

#: pip requirement -> import name, per feature (versions as in pyproject.toml).
REQUIREMENTS: dict[str, dict[str, str]] = {
    "core": {"pandas>=2.0": "pandas", "scipy>=1.11": "scipy", "scikit-image>=0.22": "skimage", "tqdm>=4.60": "tqdm"},
    "segment": {"monai>=1.4": "monai", "nibabel>=5.0": "nibabel"},
    "biomech": {"opensim>=4.5": "opensim"},
}
#: Installed through the PyTorch extension, never with plain pip (CUDA build selection).
TORCH_FEATURES = ("segment",)


def _installed(requirement: str) -> bool:
    name = requirement.split(">")[0].split("=")[0].split("<")[0].strip()
    try:
        importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def missing_requirements(features: Sequence[str]) -> list[str]:
    """pip requirements of ``features`` ("core", "segment", "biomech") that are not installed."""
    unknown = [f for f in features if f not in REQUIREMENTS]
    if unknown:
        raise InputError(f"unknown features {unknown}; known: {sorted(REQUIREMENTS)}")
    return [req for feature in features for req in REQUIREMENTS[feature] if not _installed(req)]


def ensure_dependencies(
    features: Sequence[str],
    ask: Callable[[str], bool],
    pip_install: Callable[[list[str]], None],
    install_torch: Callable[[], bool] | None = None,
) -> bool:
    """Install what ``features`` need after ``ask(message)`` returns True; False when the user declines.

    Args:
        features: e.g. ``["core", "segment"]``.
        ask: shows the message and returns the user's answer (``slicer.util.confirmOkCancelDisplay`` in Slicer).
        pip_install: installs a list of requirements (``slicer.packaging.pip_ensure`` on Slicer >= 5.12, else
            ``slicer.util.pip_install``).
        install_torch: installs torch (``PyTorchUtilsLogic().installTorch(askConfirmation=True)``); returns success.
    """
    missing = missing_requirements(features)
    needs_torch = any(f in TORCH_FEATURES for f in features) and not _installed("torch")
    if not missing and not needs_torch:
        return True
    listing = ", ".join(missing + (["torch (via the PyTorch extension)"] if needs_torch else []))
    if not ask(f"SpineBiomech needs these Python packages, which are not installed yet: {listing}. Install now?"):
        return False
    if needs_torch:
        if install_torch is None or not install_torch():
            return False
    if missing:
        pip_install(missing)
    return True

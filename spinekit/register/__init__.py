"""Segmentation-driven registration of a follow-up spine to its baseline, vertebra by vertebra.

Transform convention (ITK/SimpleITK, also what Slicer expects when it loads an ITK ``.tfm``): every transform
returned or written here maps a point of the **baseline** (fixed) scan, in LPS mm, to the corresponding point of
the **follow-up** (moving) scan. ``sitk.Resample(followup, baseline, transform)`` therefore brings the follow-up into
the baseline frame, and in Slicer the file applied to the follow-up volume moves it onto the baseline; the files are
named ``<level>_followup_to_baseline.tfm`` after that use.
"""

from __future__ import annotations

from spinekit.register.changemap import ChangeMapConfig, ChangeMaps, vertebra_change_maps
from spinekit.register.quality import QualityReport, assess_registration, level_shift
from spinekit.register.simulate import Collapse, Lesion, RigidMotion, SimulatedFollowup, simulate_followup
from spinekit.register.vertebra import RegistrationConfig, VertebraRegistration, register_vertebra

__all__ = [
    "ChangeMapConfig",
    "ChangeMaps",
    "Collapse",
    "Lesion",
    "QualityReport",
    "RegistrationConfig",
    "RigidMotion",
    "SimulatedFollowup",
    "VertebraRegistration",
    "assess_registration",
    "level_shift",
    "register_vertebra",
    "simulate_followup",
    "vertebra_change_maps",
]

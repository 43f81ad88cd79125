"""Automatic segmentation of vertebrae, discs, canal and paraspinal muscles with our own MONAI networks.

Trained SynthSeg-style (Billot et al. 2023, Med Image Anal 86:102789) on images synthesised from label maps, so
one network segments CT and any MRI contrast. Public entry point: :func:`spinekit.segment.api.segment_image`.
"""

from __future__ import annotations

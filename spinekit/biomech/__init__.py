"""Subject-specific OpenSim lumbar spine model, vertebral strength (QCT) and factor of fracture risk.

Entry points: :func:`spinekit.biomech.anatomy.anatomy_from_labels` / :func:`~spinekit.biomech.anatomy.generic_anatomy`
(the subject), :func:`spinekit.biomech.model.build_model`, :func:`spinekit.biomech.solve.solve_task`,
:func:`spinekit.biomech.pipeline.run_biomech` (everything), and the CLI :mod:`spinekit.biomech.cli`.
"""

"""Every published figure the biomechanical model uses, each with its source.

Figures carry over from the literature, code does not: the OpenSim model is built from scratch through the
API (:mod:`spinekit.biomech.model`) from the numbers below.

Coordinates are OpenSim's: X anterior, Y superior, Z right, metres.
"""

# ruff: noqa: E501  (the cited data table keeps one fascicle per line)
from __future__ import annotations

import math

#: Standard gravity (m/s²).
GRAVITY = 9.80665

# ---------------------------------------------------------------------------------------------------------------
# Skeleton geometry: Christophy M, Faruk Senan NA, Lotz JC, O'Reilly OM (2012) A musculoskeletal model for the lumbar
# spine. Biomech Model Mechanobiol 11:19-34; the model file Lumbar_C_210.osim of their SimTK package. Positions of
# the intervertebral joint centres of the neutral (all coordinates zero) model, relative to the origin of its sacrum
# body, in metres. The Christophy model represents a 50th-percentile male; its stature is taken as the de Leva 1996
# male reference stature for scaling (an assumption: the file does not state it).
# ---------------------------------------------------------------------------------------------------------------
CHRISTOPHY_JOINT_CENTRES_M: dict[str, tuple[float, float, float]] = {
    "L5/S1": (-0.0980, 0.0710, 0.0),
    "L4/L5": (-0.0880, 0.1006, 0.0),
    "L3/L4": (-0.0890, 0.1351, 0.0),
    "L2/L3": (-0.0964, 0.1675, 0.0),
    "L1/L2": (-0.1051, 0.1964, 0.0),
}
#: Christophy 2012 has no T12/L1 joint (the torso is welded to L1); its L1 height is taken as the mean lumbar
#: joint spacing of the same model (0.0314 m) above L1/L2, along the L1 axis (our assumption, flagged as generic).
CHRISTOPHY_MEAN_JOINT_SPACING_M = 0.0314
#: Shoulder (humeral head) centre of Lumbar_C_238.osim, relative to the sacrum origin (m); right side, mirror for left.
CHRISTOPHY_SHOULDER_M = (-0.0805, 0.4565, 0.1691)
#: Torso centre of mass of Lumbar_C_210.osim relative to the sacrum origin (m).
CHRISTOPHY_TORSO_COM_M = (-0.0994, 0.3572, 0.0)
#: Stature used to scale the generic geometry (de Leva 1996, Table 1: male 1741 mm, female 1735 mm).
REFERENCE_STATURE_M = {"male": 1.741, "female": 1.735}

#: Share of the total lumbar (L1-S1) rotation taken by each level: the linear coupling coefficients of the
#: CoordinateCouplerConstraints in Christophy 2012 (Lumbar_C_210.osim; L5/S1 from the joint's own SpatialTransform).
#: Flexion-extension after Pearcy & Tibrewal 1984; lateral bending and axial rotation after Rozumalski et al. 2008.
#: T12/L1 is not articulated in Christophy's model; we give it no share of the prescribed posture (it still carries
#: a joint reaction).
LUMBAR_COUPLING = {
    "flexion": {"L1/L2": 0.255, "L2/L3": 0.231, "L3/L4": 0.204, "L4/L5": 0.185, "L5/S1": 0.125},
    "lateral_bending": {"L1/L2": 0.188, "L2/L3": 0.2501, "L3/L4": 0.2453, "L4/L5": 0.1811, "L5/S1": 0.1356},
    "axial_rotation": {"L1/L2": 0.0289, "L2/L3": 0.0311, "L3/L4": 0.0378, "L4/L5": 0.0378, "L5/S1": 0.0303},
}

#: Lumbopelvic rhythm: share of a trunk flexion taken by the lumbar spine (rest by pelvic tilt at the hips) for
#: flexion to about 60 degrees, roughly 2:1 lumbar:pelvis (Tafazzol A, Arjmand N, Shirazi-Adl A, Parnianpour M (2014)
#: Lumbopelvic rhythm during forward and backward sagittal trunk rotations. J Biomech 47:2197-2203; their mean
#: lumbar/pelvis ratio falls from ~2.5 early to ~1.5 at full flexion). A round-back (stoop) lift flexes the lumbar
#: spine close to its range, 0.8 share (assumption within the ranges of Tafazzol 2014 at large flexion).
LUMBAR_SHARE_OF_TRUNK_FLEXION = 2.0 / 3.0
LUMBAR_SHARE_ROUND_BACK = 0.8

# ---------------------------------------------------------------------------------------------------------------
# Segment masses: de Leva P (1996) Adjustments to Zatsiorsky-Seluyanov's segment inertia parameters. J Biomech
# 29:1223-1230, Table 4 (% of body mass), lengths (mm, Table 4) and centre-of-mass positions (% of length from the
# proximal end).
# ---------------------------------------------------------------------------------------------------------------
DE_LEVA_MASS_FRACTION = {
    "male": {"head_neck": 0.0694, "upper_trunk": 0.1596, "middle_trunk": 0.1633, "lower_trunk": 0.1117,
             "upper_arm": 0.0271, "forearm": 0.0162, "hand": 0.0061},
    "female": {"head_neck": 0.0668, "upper_trunk": 0.1545, "middle_trunk": 0.1465, "lower_trunk": 0.1247,
               "upper_arm": 0.0255, "forearm": 0.0138, "hand": 0.0056},
}  # fmt: skip
DE_LEVA_SEGMENT_LENGTH_M = {
    "male": {"upper_arm": 0.2817, "forearm": 0.2689, "hand": 0.0862},
    "female": {"upper_arm": 0.2751, "forearm": 0.2643, "hand": 0.0780},
}
DE_LEVA_COM_FRACTION = {
    "male": {"upper_arm": 0.5772, "forearm": 0.4574, "hand": 0.7900},
    "female": {"upper_arm": 0.5754, "forearm": 0.4559, "hand": 0.7474},
}
#: Radius of gyration of the trunk (fraction of its length) for the thorax inertia (de Leva 1996 Table 4, trunk,
#: male/female sagittal ~0.33/0.31); trunk length taken as 0.3 x stature (assumption).
DE_LEVA_TRUNK_GYRATION = {"male": 0.328, "female": 0.307}

#: Mass of each lumbar trunk slice as a fraction of body mass: Christophy 2012 lumbar body masses (L1 1.677,
#: L2 1.689, L3 1.670, L4 1.799, L5 1.824 kg, derived by them from Pearsall DJ, Reid JG, Livingston LA (1996)
#: Segmental inertial parameters of the human trunk as determined from computed tomography. Ann Biomed Eng
#: 24:198-210) divided by a 70 kg reference body mass (assumption: the model file does not state it).
LUMBAR_SLICE_MASS_FRACTION = {"L1": 0.02396, "L2": 0.02413, "L3": 0.02386, "L4": 0.02570, "L5": 0.02606}
#: Pearsall 1996 slice centres of mass lie anterior to the vertebral body; Christophy 2012 places them 1.4-5.4 cm
#: anterior of the body origin (mean of their lumbar mass_center X values, 0.0296 m).
LUMBAR_SLICE_COM_ANTERIOR_M = 0.0296
#: Head-neck centre of mass above the shoulder centres (m, male 1741 mm stature): de Leva 1996 head length 242.9 mm
#: with the COM 50.02% from the vertex, cervicale ~5 cm above the shoulder centre (assumption).
HEAD_COM_ABOVE_SHOULDER_M = 0.17

# ---------------------------------------------------------------------------------------------------------------
# Muscles: a reduced set of Christophy 2012 fascicles (right side; the left mirrors Z). Each entry merges the
# fascicles named in ``merged`` into one with the geometry of the strongest of them and the summed maximum isometric
# force (N), so every group keeps its total force. Points are (body, X, Y, Z) of the neutral model relative to the
# sacrum origin (m); bodies: pelvis (Christophy pelvis, sacrum and abdomen bodies), L5..L1, thorax (torso, humerus).
# Optimal fibre length, tendon slack length (m) and pennation (rad) are those of the representative fascicle.
# Dropped as they cross no lumbar joint in the reduced model: IO1-IO3 (abdomen-pelvis) and the thoracic latissimus.
# ---------------------------------------------------------------------------------------------------------------
#: (name, group, F_max N, l_opt m, l_slack m, pennation rad, points, merged Christophy fascicles)
CHRISTOPHY_FASCICLES: tuple[tuple, ...] = (
    ("psoas_L1", "psoas", 180.2, 0.1841, 0.0647, 0.1867, (("L1", -0.1167, 0.2235, 0.02), ("pelvis", -0.0238, -0.008, 0.0759)), "Ps_L1_VB, Ps_L1_TP, Ps_L1_L2_IVD"),
    ("psoas_L2", "psoas", 151.74, 0.1597, 0.0561, 0.1868, (("L2", -0.1167, 0.186, 0.0222), ("pelvis", -0.0238, -0.008, 0.0759)), "Ps_L2_TP, Ps_L2_L3_IVD"),
    ("psoas_L3", "psoas", 63.02, 0.1394, 0.049, 0.1868, (("L3", -0.1129, 0.157, 0.0283), ("pelvis", -0.0238, -0.008, 0.0759)), "Ps_L3_TP, Ps_L3_L4_IVD"),
    ("psoas_L4", "psoas", 110.34, 0.1195, 0.042, 0.1868, (("L4", -0.1046, 0.128, 0.0259), ("pelvis", -0.0238, -0.008, 0.0759)), "Ps_L4_TP, Ps_L4_L5_IVD"),
    ("psoas_L5", "psoas", 167.44, 0.0903, 0.0317, 0.1868, (("L5", -0.088, 0.0834, 0.019), ("pelvis", -0.0238, -0.008, 0.0759)), "Ps_L5_VB, Ps_L5_TP"),
    ("IL_L1", "iliocostalis", 50.0, 0.0515, 0.1089, 0.2409, (("pelvis", -0.1594, 0.0599, 0.0383), ("L1", -0.1366, 0.2157, 0.0292)), "IL_L1"),
    ("IL_L2", "iliocostalis", 71.0, 0.0373, 0.0789, 0.2409, (("pelvis", -0.1509, 0.0772, 0.0426), ("L2", -0.1249, 0.1831, 0.0285)), "IL_L2"),
    ("IL_L3", "iliocostalis", 84.0, 0.0252, 0.0533, 0.2409, (("pelvis", -0.1369, 0.0888, 0.0475), ("L3", -0.1176, 0.1563, 0.0305)), "IL_L3"),
    ("IL_L4", "iliocostalis", 87.0, 0.0167, 0.0354, 0.2409, (("pelvis", -0.1318, 0.0856, 0.0442), ("L4", -0.111, 0.1287, 0.0314)), "IL_L4"),
    ("IL_R5_9", "iliocostalis", 82.0, 0.1554, 0.0838, 0.2409, (("pelvis", -0.1333, 0.0939, 0.0511), ("L2", -0.1435, 0.1741, 0.0522), ("thorax", -0.1835, 0.2857, 0.0537), ("thorax", -0.1809, 0.3052, 0.0538)), "IL_R5..IL_R9"),
    ("IL_R10_12", "iliocostalis", 171.0, 0.089, 0.0366, 0.2409, (("pelvis", -0.1248, 0.1011, 0.0579), ("thorax", -0.1423, 0.2173, 0.0594)), "IL_R10..IL_R12"),
    ("LTpL_L1", "longissimus", 36.0, 0.0813, 0.0944, 0.2199, (("pelvis", -0.162, 0.0592, 0.0431), ("L1", -0.1356, 0.2153, 0.0218)), "LTpL_L1"),
    ("LTpL_L2", "longissimus", 42.0, 0.0677, 0.0744, 0.2199, (("pelvis", -0.1597, 0.062, 0.0419), ("L2", -0.1239, 0.184, 0.0203)), "LTpL_L2"),
    ("LTpL_L3", "longissimus", 47.0, 0.0549, 0.0596, 0.2199, (("pelvis", -0.1584, 0.0665, 0.0402), ("L3", -0.1176, 0.1559, 0.0196)), "LTpL_L3"),
    ("LTpL_L4", "longissimus", 51.0, 0.0392, 0.0424, 0.2199, (("pelvis", -0.1505, 0.0665, 0.0373), ("L4", -0.1093, 0.1262, 0.0224)), "LTpL_L4"),
    ("LTpL_L5", "longissimus", 53.0, 0.0515, 0.001, 0.2199, (("pelvis", -0.1412, 0.0739, 0.0349), ("L5", -0.1083, 0.0977, 0.0224)), "LTpL_L5"),
    ("LTpT_T1_6", "longissimus", 100.0, 0.1061, 0.2555, 0.2199, (("L2", -0.1399, 0.1571, 0.0038), ("thorax", -0.1601, 0.4915, 0.0265)), "LTpT_T1..LTpT_T6"),
    ("LTpT_T7_12", "longissimus", 188.0, 0.098, 0.1494, 0.2199, (("pelvis", -0.1576, 0.0307, 0.024), ("L4", -0.1357, 0.1201, 0.0219), ("L3", -0.1385, 0.1498, 0.0209), ("L2", -0.1411, 0.1748, 0.0198), ("thorax", -0.1649, 0.2729, 0.0176)), "LTpT_T7..LTpT_T12"),
    ("LTpT_R4_8", "longissimus", 82.0, 0.1061, 0.1984, 0.2199, (("pelvis", -0.1429, 0.0503, 0.0004), ("L4", -0.1355, 0.1212, 0.0114), ("L3", -0.1343, 0.1498, 0.016), ("L2", -0.1391, 0.1753, 0.0205), ("thorax", -0.1853, 0.292, 0.0407), ("thorax", -0.1837, 0.3417, 0.0464)), "LTpT_R4..LTpT_R8"),
    ("LTpT_R9_12", "longissimus", 141.0, 0.1045, 0.1313, 0.2199, (("pelvis", -0.1577, 0.0307, 0.024), ("L4", -0.1351, 0.1211, 0.0294), ("L3", -0.1345, 0.1502, 0.0326), ("L2", -0.1391, 0.1759, 0.0356), ("thorax", -0.169, 0.2589, 0.0456)), "LTpT_R9..LTpT_R12"),
    ("MF_L1_short", "multifidus", 27.25, 0.0468, 0.0195, 0.0, (("L4", -0.12, 0.1355, 0.0175), ("L1", -0.1408, 0.1871, 0.003)), "MF_m1.laminar, MF_m1s"),
    ("MF_L1_long", "multifidus", 63.54, 0.103, 0.0309, 0.0, (("pelvis", -0.1446, 0.0754, 0.0384), ("L1", -0.1474, 0.1842, 0.0031)), "MF_m1t.1-3"),
    ("MF_L2_short", "multifidus", 28.14, 0.0454, 0.0176, 0.0, (("L5", -0.1165, 0.1087, 0.0158), ("L2", -0.1309, 0.1596, 0.0035)), "MF_m2.laminar, MF_m2s"),
    ("MF_L2_long", "multifidus", 109.02, 0.0809, 0.0246, 0.0, (("pelvis", -0.1473, 0.0702, 0.0368), ("L2", -0.1347, 0.153, 0.0036)), "MF_m2t.1-3"),
    ("MF_L3_short", "multifidus", 35.45, 0.0397, 0.0165, 0.0, (("pelvis", -0.1215, 0.0836, 0.0174), ("L3", -0.1256, 0.1298, 0.0029)), "MF_m3.laminar, MF_m3s"),
    ("MF_L3_long", "multifidus", 72.0, 0.1028, 0.0342, 0.0, (("pelvis", -0.1645, 0.014, 0.0171), ("L3", -0.1318, 0.1261, 0.0017)), "MF_m3t.1-3"),
    ("MF_L4_short", "multifidus", 31.7, 0.0372, 0.0235, 0.0, (("pelvis", -0.1437, 0.0547, 0.0162), ("L4", -0.1244, 0.1029, 0.0022)), "MF_m4.laminar, MF_m4s"),
    ("MF_L4_long", "multifidus", 64.2, 0.0548, 0.0222, 0.0, (("pelvis", -0.1522, 0.0415, 0.0154), ("L4", -0.1308, 0.1033, 0.0029)), "MF_m4t.1-3"),
    ("MF_L5_short", "multifidus", 26.95, 0.0256, 0.0097, 0.0, (("pelvis", -0.1342, 0.0601, 0.0124), ("L5", -0.1239, 0.0881, 0.0056)), "MF_m5.laminar, MF_m5s"),
    ("MF_L5_long", "multifidus", 31.05, 0.0759, 0.0308, 0.0, (("pelvis", -0.1741, 0.0052, 0.01), ("L5", -0.1335, 0.0879, 0.0029)), "MF_m5t.1-3"),
    ("QL_post", "quadratus_lumborum", 115.02, 0.0222, 0.0186, 0.1292, (("pelvis", -0.1115, 0.1053, 0.059), ("L4", -0.111, 0.1291, 0.0303)), "QL_post (7 fascicles)"),
    ("QL_mid", "quadratus_lumborum", 38.0, 0.0631, 0.0328, 0.1292, (("thorax", -0.1453, 0.2394, 0.0312), ("L3", -0.1178, 0.158, 0.0304)), "QL_mid (5 fascicles)"),
    ("QL_ant", "quadratus_lumborum", 46.74, 0.1033, 0.0537, 0.1292, (("pelvis", -0.1048, 0.1111, 0.0692), ("thorax", -0.1182, 0.2413, 0.0174)), "QL_ant (6 fascicles)"),
    ("RA", "rectus_abdominis", 263.0, 0.2238, 0.017, 0.0, (("pelvis", -0.0416, -0.0475, 0.0107), ("thorax", -0.0159, 0.3338, 0.0345)), "rect_abd"),
    ("EO1_3", "external_oblique", 308.47, 0.0384, 0.0466, 0.0, (("thorax", -0.0186, 0.2245, 0.1082), ("pelvis", -0.0012, 0.174, 0.0416)), "EO1..EO3"),
    ("EO4_6", "external_oblique", 416.4, 0.0565, 0.0571, 0.0, (("thorax", -0.1063, 0.2033, 0.1051), ("pelvis", -0.0701, 0.1111, 0.1041)), "EO4..EO6"),
    ("IO4_6", "internal_oblique", 326.4, 0.0697, 0.047, 0.0, (("thorax", -0.027, 0.2212, 0.1145), ("pelvis", -0.0574, 0.1079, 0.1105)), "IO4..IO6"),
    ("LD_L", "latissimus_dorsi", 234.6, 0.3551, 0.0778, 0.0, (("L3", -0.1296, 0.133, 0.0039), ("thorax", -0.09, 0.4413, 0.1734)), "LD_L1..LD_L5 (Lumbar_C_238)"),
)  # fmt: skip

#: Specific tension for turning a measured muscle cross-sectional area into a maximum isometric force (N/cm²):
#: 100 N/cm², the value Bruno et al. 2015 (J Biomech Eng 137:081003) used for the trunk muscles of their
#: thoracolumbar model. Anatomical CSA from one axial slice underestimates PCSA for pennate muscles; we use it as is.
SPECIFIC_TENSION_N_PER_CM2 = 100.0

#: Maximum muscle stress behind the Christophy 2012 forces (N/cm²): 46 N/cm², the value of Bogduk N, Macintosh JE,
#: Pearcy MJ (1992) A universal model of the lumbar back muscles in the upright position. Spine 17:897-913, whose
#: architecture Christophy adopted (check: their multifidus total, 489 N per side, is 10.6 cm² x 46 N/cm², close to
#: Bogduk's PCSA). The model's generic forces are PCSA = F/46 times SPECIFIC_TENSION_N_PER_CM2.
CHRISTOPHY_MAX_STRESS_N_PER_CM2 = 46.0

#: Scan muscle groups (spinekit.labels) -> model groups whose force they scale. The erector spinae label covers
#: iliocostalis + longissimus; "autochthon" (TotalSegmentator) covers both and multifidus.
SCAN_TO_MODEL_GROUPS = {
    "psoas": ("psoas",),
    "quadratus_lumborum": ("quadratus_lumborum",),
    "multifidus": ("multifidus",),
    "erector_spinae": ("iliocostalis", "longissimus"),
    "autochthon": ("iliocostalis", "longissimus", "multifidus"),
}

#: Reserve actuators at each intervertebral coordinate: optimal moment (N m) that makes them expensive in the
#: static-optimization cost (sum of squared activations), so muscles carry the load wherever they can.
RESERVE_OPTIMAL_MOMENT_NM = 1.0
#: Residual actuators on the pelvis (the hip muscles, not modelled): cheap, they hold the pelvis in any posture.
PELVIS_RESIDUAL_OPTIMAL_MOMENT_NM = 10000.0
#: A task whose largest reserve moment exceeds this share of the net joint moment, or this absolute moment,
#: is flagged as not converged (muscles could not balance it).
RESERVE_SHARE_LIMIT = 0.05
RESERVE_ABS_LIMIT_NM = 2.0

# ---------------------------------------------------------------------------------------------------------------
# In-vivo validation: Wilke H-J, Neef P, Caimi M, Hoogland T, Claes LE (1999) New in vivo measurements of pressures
# in the intervertebral disc in daily life. Spine 24:755-762 (L4/L5 intradiscal pressure, MPa).
# ---------------------------------------------------------------------------------------------------------------
WILKE_1999_PRESSURE_MPA = {
    "standing": 0.5,
    "flexed_standing": 1.1,
    "lift20_roundback": 2.3,
    "lift20_close": 1.1,
}
WILKE_RATIO_TOLERANCE = 0.25
#: Standing L4/L5 compression for a ~70 kg adult reported by musculoskeletal models (N), e.g. Bruno 2015, Han 2012.
STANDING_L4L5_RANGE_N = (400.0, 1000.0)

# ---------------------------------------------------------------------------------------------------------------
# Risk: factor of risk (load / strength), Hayes WC, Piazza SJ, Zysset PK (1991) Radiol Clin North Am 29:1-18;
# Bouxsein ML et al. (2006) J Bone Miner Res 21:1475-1482: fracture expected above 1.0. The +-20 % transition zone:
# the biomechanical fracture threshold paper of Keaveny & Bouxsein (2008) J Bone Miner Res 23:1541 (PMC2684155,
# doi 10.1359/jbmr.080406), abstract, verified: "a relatively narrow 'transition zone' of +-20% of the assumed
# biomechanical fracture threshold" (Phi = 1).
# ---------------------------------------------------------------------------------------------------------------
RISK_THRESHOLD = 1.0
RISK_TRANSITION = 0.20

#: Published load-to-strength ratios (vertebral compressive load / QCT strength) of older adults per task type, used
#: as a plausibility range for L1-L4 with a typical older-adult vBMD (LSR_CHECK_VBMD_MG_CM3). Sources named by the
#: brief: Bruno AG et al. (2017) J Bone Miner Res 32:1282-1290 (female thoracolumbar model, 119 activities; its
#: abstract, verified, says only that "the highest factor-of-risk values generally occurred in the thoracolumbar
#: region"); Mokhtarzadeh H et al. (2021) J Bone Miner Res, "Patterns of load-to-strength ratios along the spine in
#: a population-based cohort ..." (Framingham, 250 subjects); Anderson DE et al. (2022) Front Bioeng Biotechnol
#: 10:866970 (natural standing, standing + weights, forward flexion + weights, lateral bending + weights, normative
#: LSRs of 250 Framingham men and women). NOT VERIFIED: the stored text of these papers showed their abstracts only,
#: without LSR values; the ranges are the brief's figures (standing ~0.1-0.3; flexion with weights and lifting up to
#: ~0.6-1.0), with the lifting lower bound 0.3 chosen here. Keys are task names of spinekit.biomech.tasks.
PUBLISHED_LSR_RANGES: dict[str, tuple[float, float]] = {
    "standing": (0.1, 0.3),
    "flexion60_5kg": (0.3, 1.0),
    "lift20_roundback": (0.3, 1.0),
}
PUBLISHED_LSR_STATUS = "unverified: brief's figures attributed to Bruno 2017, Mokhtarzadeh 2021, Anderson 2022"
#: Typical older-adult lumbar trabecular vBMD (mg/cm³) for the plausibility check (brief's figure; assumption).
LSR_CHECK_VBMD_MG_CM3 = 120.0

DEG = math.pi / 180.0

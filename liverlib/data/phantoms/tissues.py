"""Tissue classes of the phantoms and their CT numbers (HU) per contrast phase."""

from __future__ import annotations

TISSUES: dict[str, int] = {
    "air": 0,  # outside the body (inside the reconstruction field)
    "fat": 1,  # subcutaneous, visceral and mediastinal fat
    "muscle": 2,  # body wall, paraspinal, psoas, diaphragm, iliacus, gluteal
    "liver": 3,  # liver parenchyma (label 1)
    "lesion": 4,  # liver lesion (label 2)
    "liver_vessel": 5,  # intrahepatic portal and hepatic veins (label 1)
    "spleen": 6,
    "kidney": 7,
    "artery": 8,  # aorta, iliac, celiac, mesenteric and renal arteries
    "vein": 9,  # IVC, portal trunk, splenic, mesenteric and renal veins
    "pancreas": 10,
    "gallbladder": 11,
    "bowel_wall": 12,  # stomach, duodenum, small bowel and colon walls
    "bowel_content": 13,  # fluid, food, stool, oral contrast
    "gas": 14,  # gas in the stomach and bowel
    "lung": 15,
    "heart": 16,
    "bone": 17,  # cancellous bone
    "cortical_bone": 18,
    "cartilage": 19,  # costal cartilage
    "disc": 20,  # intervertebral disc
    "csf": 21,  # spinal canal
    "skin": 22,
    "table": 23,  # the scanner table
    "padding": 24,  # outside the circular reconstruction field
    "adrenal": 25,  # adrenal glands
    "mass": 26,  # lesion-like structures outside the liver: renal, adrenal, retroperitoneal and splenic masses
    "fluid": 27,  # free fluid: ascites, a collection on a resection's cut surface
}

PHASES = ("unenhanced", "arterial", "portal_venous", "delayed")

# Nominal mean HU per tissue and phase, (low, high): one value is drawn per case.
# Sources: textbook and review values for multiphase abdominal CT (liver 50-65
# unenhanced, 90-130 portal venous, 80-105 delayed; aorta ~45 / 250-350 / 150-190 /
# 110-150; adrenal limbs 10-40 unenhanced; simple cysts 0-20; calcification > 200); widened to
# the spread between patients (fat -120..-80, muscle 40-56 unenhanced, cancellous bone 130-280 with age).
_HU = {
    "fat": {"*": (-118, -82)},
    "muscle": {"unenhanced": (40, 56), "arterial": (44, 58), "portal_venous": (48, 62), "delayed": (48, 62)},
    "skin": {"*": (25, 45)},
    "liver": {"unenhanced": (50, 66), "arterial": (64, 82), "portal_venous": (98, 124), "delayed": (80, 100)},
    "spleen": {"unenhanced": (40, 52), "arterial": (100, 135), "portal_venous": (108, 132), "delayed": (85, 104)},
    "kidney": {"unenhanced": (26, 40), "arterial": (150, 205), "portal_venous": (145, 185), "delayed": (130, 172)},
    "kidney_medulla": {"unenhanced": (26, 34), "arterial": (70, 100), "portal_venous": (130, 170),
                       "delayed": (140, 190)},
    "artery": {"unenhanced": (34, 52), "arterial": (230, 340), "portal_venous": (145, 190), "delayed": (110, 140)},
    "vein": {"unenhanced": (36, 50), "arterial": (75, 110), "portal_venous": (125, 165), "delayed": (110, 150)},
    "portal_vein": {"unenhanced": (36, 50), "arterial": (95, 140), "portal_venous": (155, 200), "delayed": (110, 150)},
    "hepatic_vein": {"unenhanced": (32, 44), "arterial": (48, 70), "portal_venous": (135, 180), "delayed": (105, 145)},
    "pancreas": {"unenhanced": (38, 50), "arterial": (100, 140), "portal_venous": (85, 110), "delayed": (70, 95)},
    "bowel_wall": {"unenhanced": (36, 48), "arterial": (75, 110), "portal_venous": (85, 115), "delayed": (70, 100)},
    "adrenal": {"unenhanced": (10, 40), "arterial": (45, 80), "portal_venous": (50, 90), "delayed": (40, 70)},
    "solid_mass": {"unenhanced": (25, 45), "arterial": (60, 140), "portal_venous": (60, 120), "delayed": (50, 100)},
    "cyst": {"*": (-5, 20)},
    "calcification": {"*": (200, 900)},
    "bowel_fluid": {"*": (5, 25)},
    "oral_contrast": {"*": (160, 320)},
    "stool": {"*": (-40, 20)},
    "adenoma": {"unenhanced": (-10, 10), "arterial": (40, 75), "portal_venous": (50, 85), "delayed": (25, 50)},  # Boland 1998
    "bile": {"*": (2, 18)},
    "lung": {"*": (-875, -810)},
    "blood": {"unenhanced": (38, 50), "arterial": (230, 340), "portal_venous": (145, 190), "delayed": (110, 150)},
    "myocardium": {"unenhanced": (40, 52), "arterial": (95, 130), "portal_venous": (100, 130), "delayed": (80, 110)},
    "bone": {"*": (130, 280)},
    "cortical_bone": {"*": (850, 1300)},
    "cartilage": {"*": (110, 190)},
    "disc": {"*": (75, 105)},
    "csf": {"*": (8, 22)},
    "table": {"*": (180, 380)},
}
# Lesion minus liver (HU) by kind and phase: metastases and necrosis are hypodense;
# hypervascular lesions (haemangioma, FNH, hypervascular metastases) stay bright;
# hepatocellular carcinoma enhances in the arterial phase and washes out later.
_LESION_DELTA = {
    "hypo": {"unenhanced": (-38, -20), "arterial": (-50, -25), "portal_venous": (-70, -35), "delayed": (-50, -25)},
    "hyper": {"unenhanced": (18, 32), "arterial": (35, 80), "portal_venous": (22, 45), "delayed": (10, 30)},
    "washout": {"unenhanced": (-20, -5), "arterial": (35, 80), "portal_venous": (-30, -8), "delayed": (-35, -12)},
}

_GAS_HU = -1000.0  # bowel gas, and the air the body is painted on

# per-case contrast factor on (phase - unenhanced): enhancement varies with dose per kg, injection rate,
# scan delay and cardiac output (Bae KT, Radiology 2010;256:32-61; Heiken JP et al., Radiology 1995)
_ENHANCEMENT = (0.6, 1.4)
# less spread in the delayed (equilibrium) phase, which depends on the dose but hardly on the timing
_ENHANCEMENT_SPREAD = {"unenhanced": 0.0, "arterial": 1.0, "portal_venous": 1.0, "delayed": 0.4}
# hepatic steatosis: ~15 % of adults on CT; unenhanced liver < 40-48 HU and darker than the spleen
# (Kodama Y et al., AJR 2007;188:1307; Park SH et al., Radiology 2006;239:105)
_STEATOSIS_P = 0.15
_STEATOSIS_HU = (10.0, 45.0)
_LIVER_TEXTURE = (2.0, 10.0)  # HU amplitude of the liver's smooth texture (parenchymal heterogeneity)


def _hu_table(rng, phase: str, oral: bool) -> tuple[dict[str, float], float, bool]:
    """Draw the nominal HU of every tissue for one case in ``phase`` (``oral``: contrast in the bowel).

    Every enhancing tissue (one with per-phase ranges) gets ``unenhanced + k * (phase - unenhanced)``
    with one contrast factor ``k`` for the whole case (dose, injection rate, timing, cardiac output);
    a fatty liver lowers the liver's HU in every phase.

    Returns
    -------
    hu : dict
        Nominal HU per tissue, plus ``visceral_fat`` and ``liver_texture`` (HU amplitude of the liver's texture).
    k : float
        The contrast factor (1.0 unenhanced).
    steatosis : bool
    """
    hu, base = {}, {}
    for name, by_phase in _HU.items():
        lo, hi = by_phase.get(phase, by_phase.get("*"))
        hu[name] = float(rng.uniform(lo, hi))
        if "unenhanced" in by_phase:
            base[name] = hu[name] if phase == "unenhanced" else float(rng.uniform(*by_phase["unenhanced"]))
    k = 1.0 + _ENHANCEMENT_SPREAD[phase] * (float(rng.uniform(*_ENHANCEMENT)) - 1.0)
    for name, b in base.items():
        hu[name] = b + k * (hu[name] - b)
    # keep the classic relations: spleen darker than liver unenhanced, a little brighter in venous phase
    if phase == "unenhanced":
        hu["spleen"] = hu["liver"] - rng.uniform(4, 12)
    elif phase == "portal_venous":
        hu["spleen"] = hu["liver"] + rng.uniform(0, 15)
    # fatty liver: the unenhanced liver drops below the spleen, and the enhanced liver by as much
    steatosis = bool(rng.random() < _STEATOSIS_P)
    fatty_unenhanced = min(float(rng.uniform(*_STEATOSIS_HU)), base["liver"] - 16.0)  # (the spleen is >= -12)
    if steatosis:
        hu["liver"] += fatty_unenhanced - base["liver"]
    hu["visceral_fat"] = hu["fat"] + rng.uniform(0, 12)
    hu["bowel_fluid"] = hu["oral_contrast"] if oral else hu["bowel_fluid"]
    hu["liver_texture"] = float(rng.uniform(*_LIVER_TEXTURE))
    return hu, k, steatosis

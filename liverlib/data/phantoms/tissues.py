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
}

PHASES = ("unenhanced", "arterial", "portal_venous")

# Nominal mean HU per tissue and phase, (low, high): one value is drawn per case.
# Sources: textbook and review values for contrast-enhanced abdominal CT (liver
# 50-65 unenhanced, 90-130 portal venous; aorta ~45 / 250-350 / 150-190, ...).
_HU = {
    "fat": {"*": (-112, -88)},
    "muscle": {"unenhanced": (44, 54), "arterial": (46, 56), "portal_venous": (50, 60)},
    "skin": {"*": (25, 45)},
    "liver": {"unenhanced": (52, 64), "arterial": (64, 80), "portal_venous": (98, 124)},
    "spleen": {"unenhanced": (42, 50), "arterial": (100, 135), "portal_venous": (108, 132)},
    "kidney": {"unenhanced": (28, 38), "arterial": (150, 205), "portal_venous": (145, 185)},
    "kidney_medulla": {"unenhanced": (26, 34), "arterial": (70, 100), "portal_venous": (130, 170)},
    "artery": {"unenhanced": (36, 50), "arterial": (230, 340), "portal_venous": (145, 190)},
    "vein": {"unenhanced": (36, 50), "arterial": (75, 110), "portal_venous": (125, 165)},
    "portal_vein": {"unenhanced": (36, 50), "arterial": (95, 140), "portal_venous": (155, 200)},
    "hepatic_vein": {"unenhanced": (32, 44), "arterial": (48, 70), "portal_venous": (135, 180)},
    "pancreas": {"unenhanced": (38, 50), "arterial": (100, 140), "portal_venous": (85, 110)},
    "bowel_wall": {"unenhanced": (36, 48), "arterial": (75, 110), "portal_venous": (85, 115)},
    "bowel_fluid": {"*": (5, 25)},
    "oral_contrast": {"*": (160, 320)},
    "stool": {"*": (-40, 20)},
    "bile": {"*": (2, 18)},
    "lung": {"*": (-875, -810)},
    "blood": {"unenhanced": (38, 50), "arterial": (230, 340), "portal_venous": (145, 190)},
    "myocardium": {"unenhanced": (40, 52), "arterial": (95, 130), "portal_venous": (100, 130)},
    "bone": {"*": (140, 260)},
    "cortical_bone": {"*": (850, 1300)},
    "cartilage": {"*": (110, 190)},
    "disc": {"*": (75, 105)},
    "csf": {"*": (8, 22)},
    "table": {"*": (180, 380)},
}
# Lesion minus liver (HU) by kind and phase: metastases and necrosis are hypodense,
# hypervascular tumours hyperdense in the arterial phase.
_LESION_DELTA = {
    "hypo": {"unenhanced": (-38, -20), "arterial": (-50, -25), "portal_venous": (-70, -35)},
    "hyper": {"unenhanced": (18, 32), "arterial": (35, 80), "portal_venous": (22, 45)},
}

_GAS_HU = -1000.0  # bowel gas, and the air the body is painted on


def _hu_table(rng, phase: str, oral: bool) -> dict[str, float]:
    """Draw the nominal HU of every tissue for one case in ``phase`` (``oral``: contrast in the bowel)."""
    hu = {}
    for name, by_phase in _HU.items():
        lo, hi = by_phase.get(phase, by_phase.get("*"))
        hu[name] = float(rng.uniform(lo, hi))
    # keep the classic relations: spleen darker than liver unenhanced, a little brighter in venous phase
    if phase == "unenhanced":
        hu["spleen"] = hu["liver"] - rng.uniform(4, 12)
    elif phase == "portal_venous":
        hu["spleen"] = hu["liver"] + rng.uniform(0, 15)
    hu["visceral_fat"] = hu["fat"] + rng.uniform(0, 12)
    hu["bowel_fluid"] = hu["oral_contrast"] if oral else hu["bowel_fluid"]
    return hu

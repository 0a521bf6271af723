"""Synthetic abdominal CT phantoms: the embedded default cohort.

Every case is a patient-like abdominal CT rendered from smooth signed distance
functions (SDFs): a body outline with skin, subcutaneous fat and muscle; lungs
and the heart above the diaphragm; a liver with a large right lobe, a tapering
left lobe that crosses the midline, a dome under the right lung and branching
portal and hepatic veins; zero to many hypo- or hyperdense lesions inside the
liver; spleen, kidneys, pancreas, gallbladder, stomach, duodenum, colon and
small bowel with gas; aorta, IVC, portal, splenic and renal veins; vertebrae,
ribs with costal cartilage, psoas muscles and, low in the scan, the iliac wings.

How a case is made
------------------
1. The anatomy (:mod:`.anatomy`, nominal layout in ``anatomy.yaml``) is sampled
   in a *standard* frame (mm, origin at the centre of the abdominal cavity,
   ``z = 0`` at the top of the right diaphragm dome), then mapped to the patient
   by per-axis scale factors. The liver is rescaled until its volume hits a
   target drawn in 1.25-1.95 L.
2. The scanner is sampled (:mod:`.scanner`): field of view (300-450 mm over
   ``size`` pixels), slice spacing (1-5 mm, 40-150 slices unless ``n_slices`` is
   given), noise, contrast phase (unenhanced, arterial, portal venous), the
   padding value outside the circular reconstruction field, the rescale
   intercept and the stored orientation (flips of RAS, as the LiTS files vary).
   The nominal HU of every tissue is drawn per case from textbook ranges for
   its phase (:mod:`.tissues`).
3. Each structure is painted over the previous ones (:mod:`.render`) with an
   opacity ``alpha = clip(0.5 - d / w, 0, 1)`` where ``d`` is its SDF and ``w``
   the pixel size: partial volume at every edge. Work is kept where it matters:
   each SDF is evaluated only inside the structure's bounding box, on a grid no
   finer than 1.6 mm (SDFs are smooth; the opacity is then taken at full
   resolution); the body wall, which changes slowly with height, is painted
   once per 6 mm band of planes; and for fine grids (more than 256 pixels
   across, slices under ~1.2 mm) the noise-free anatomy is rendered at a whole
   fraction of the resolution and upsampled (linearly; the tissue map by
   nearest neighbour).
4. White noise is added and the image blurred with the scanner's PSF (which also
   makes the noise correlated, as CT noise is) at full resolution, then rounded
   to integer HU and clipped to [-1024, 3071]; outside the circular field the
   padding value is written.

The label is read off the tissue map (the last structure painted with
``alpha >= 0.5`` at each voxel): 1 = liver parenchyma and its intrahepatic
vessels (IVC, gallbladder and hilar fat excluded, as in LiTS), 2 = lesion.

Determinism: each case draws from its own generators, spawned from
``np.random.SeedSequence([seed, case_id])``, so a case is byte-identical whatever
the worker count or order. The anatomy, the scanner draws and the lesions do not
depend on ``size`` or ``n_slices``: the same case at 128 and 256 pixels is the
same patient in the same scanner (lesions narrower than a thick slice are the
one exception: their smallest diameter follows the slice spacing). The order of
the random draws is part of the output: reordering them changes every case.
"""

from liverlib.data.phantoms.cohort import (
    Phantom,
    make_phantom,
    write_case,
    write_cohort,
)
from liverlib.data.phantoms.scanner import PADDING_VALUES
from liverlib.data.phantoms.tissues import PHASES, TISSUES

__all__ = ["PADDING_VALUES", "PHASES", "TISSUES", "Phantom", "make_phantom", "write_case", "write_cohort"]

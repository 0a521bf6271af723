"""Synthetic abdominal CT phantoms: the embedded default cohort.

Every case is a patient-like abdominal CT rendered from smooth signed distance
functions (SDFs): a body outline with skin, subcutaneous fat and muscle; lungs
and the heart above the diaphragm; a liver with a large right lobe, a tapering
left lobe that crosses the midline, a dome under the right lung and branching
portal and hepatic veins; zero to many hypo- or hyperdense lesions inside the
liver; normal, cirrhotic (nodular, with or without ascites), large or resected
livers; spleen, kidneys, adrenal glands, pancreas, gallbladder, a stomach with
rugae and a filling drawn per case, duodenum, colon and small bowel loops with
mixed contents (fluid, gas, oral contrast, feces-like) and, in some cases, a
thickened wall; masses outside the liver (renal, adrenal, retroperitoneal,
splenic; sometimes a large one against the liver); aorta, IVC, portal, splenic
and renal veins; vertebrae, ribs with costal cartilage, diaphragmatic crura,
psoas muscles and, low in the scan, the iliac wings.

How a case is made
------------------
1. The anatomy (:mod:`.anatomy`, nominal layout in ``anatomy.yaml``) is sampled
   in a *standard* frame (mm, origin at the centre of the abdominal cavity,
   ``z = 0`` at the top of the right diaphragm dome), then mapped to the patient
   by per-axis scale factors. The liver's shape is drawn (:mod:`.liver_shape`:
   normal, cirrhotic, large or resected) and the liver rescaled until its
   volume hits a target drawn for that shape (normal 1.25-1.95 L).
2. The scanner is sampled (:mod:`.scanner`), SynthSeg-style every appearance
   parameter per case: the field of view over ``size`` pixels (a quarter of
   the cases a tight crop around the liver, its extent plus 5-40 mm in-plane
   and 0-25 mm in z, without padding; the others 256-512 mm, fitted to the body
   or, in some, narrower than it), slice spacing (0.7-5 mm, 40-200 planes
   unless ``n_slices`` is given) and a separate slice thickness (0.8-2 times
   the spacing, 0.7-5 mm), the image's PSF (0.5-1.2 mm), noise (5-30 HU, its
   own in-plane correlation of 0.4-1.5 pixels, often band-pass as CT noise
   is), contrast phase (unenhanced, arterial, portal venous, delayed), streak
   artefacts through dense structures, beam hardening (cupping, a dark band
   between dense structures), a smooth additive bias field (up to 25 HU), the
   padding value outside the circular reconstruction field, the rescale
   intercept and the stored orientation (flips of RAS, as the LiTS files vary).
   The nominal HU of every tissue is drawn per case from wide literature
   ranges for its phase (:mod:`.tissues`), its enhancement scaled by one
   contrast factor for the whole case (0.6-1.4: dose and timing); 15 % of the
   livers are fatty (10-45 HU unenhanced, darker than the spleen), and the
   amplitude of the liver's texture is drawn too (``hu["liver_texture"]``).
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
4. At full resolution the artefacts are added (their patterns change once per
   10 mm band of planes), the image is blurred with the PSF in-plane and the
   slice profile along z, and correlated noise is added (white noise shaped in
   the Fourier domain: the kernel's low-pass, the ramp filter's high-pass and
   the slice profile); then it is rounded to integer HU and clipped to
   [-1024, 3071]; outside the circular field the padding value is written.

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
    GENERATOR_VERSION,
    Phantom,
    make_phantom,
    write_case,
    write_cohort,
)
from liverlib.data.phantoms.scanner import PADDING_VALUES
from liverlib.data.phantoms.tissues import PHASES, TISSUES

__all__ = ["GENERATOR_VERSION", "PADDING_VALUES", "PHASES", "TISSUES", "Phantom", "make_phantom", "write_case", "write_cohort"]

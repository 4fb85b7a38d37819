"""Post-processing on the model grid, after the network and before mapping back.

One module per step: :mod:`.brain_mask` (with :mod:`.atlas`, the MNI brain fitted to the
network's tissue probability), :mod:`.mixture` (the per-scan tissue intensity model and
the fine-tuned network's override), :mod:`.morphology` (the mask operations they share).
:mod:`.settings` parses a bundle's ``extra["postprocess"]`` once; :mod:`.fit` decides
the steps for one scan and applies them block by block; :mod:`.finetuned` is what a
fine-tuned version carries.
"""

from .fit import PostprocessFit, apply_in_slabs, fit_postprocess, postprocess
from .settings import BrainMaskSettings, MixtureSettings, PostprocessSettings

__all__ = [
    "BrainMaskSettings",
    "MixtureSettings",
    "PostprocessFit",
    "PostprocessSettings",
    "apply_in_slabs",
    "fit_postprocess",
    "postprocess",
]

"""Uncertainty: samplers (MC dropout, test-time augmentation, ensembles), the entropy
decomposition and an image-level out-of-distribution score.

- ``decompose(prob_samples)``: (S, K, *spatial) probabilities -> total, aleatoric,
  epistemic maps in nats (total = aleatoric + epistemic exactly).
- ``MCDropoutSampler``, ``TTASampler``, ``EnsembleSampler``: (S, K, *spatial) samples on
  the model grid; ``make_sampler(method, models, samples)``.
- ``estimate_uncertainty(volume, model_or_models, method=..., samples=...)``: the
  whole-volume driver, memory-bounded, results on the scan's own grid.
- ``ood_score``, ``assess_ood``, ``calibrate_ood``, ``ood_calibration``, ``ood_threshold``,
  ``ood_flag``: the out-of-distribution warning; ``assess_model_ood``, ``calibrate_external``:
  the same with an nnU-Net folder's or MONAI bundle's threshold calibrated on first use.

Importing this package is cheap: torch loads with the first sampler or driver used
(``decompose`` and the OOD functions work on numpy arrays without torch).
"""

from __future__ import annotations

from importlib import import_module
from types import ModuleType
from typing import Any

_LAZY = {
    "decompose": "decompose",
    "entropy": "decompose",
    "moments": "decompose",
    "split_entropy": "decompose",
    "Sampler": "samplers",
    "MCDropoutSampler": "mc_sampling",
    "TTASampler": "tta",
    "EnsembleSampler": "samplers",
    "mc_dropout": "mc_sampling",
    "preserved_modes": "samplers",
    "METHODS": "run",
    "UncertaintyResult": "run",
    "estimate_uncertainty": "run",
    "make_sampler": "run",
    "MAIN_SCORE": "ood",
    "OODResult": "ood",
    "assess_ood": "ood",
    "calibrate_ood": "ood",
    "ood_calibration": "ood",
    "ood_flag": "ood",
    "ood_score": "ood",
    "ood_threshold": "ood",
    "assess_model_ood": "ood_first_use",
    "calibrate_external": "ood_first_use",
}

__all__ = list(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
        globals()[name] = value
        # Importing a submodule binds it as an attribute of this package, hiding the
        # function of the same name (``decompose``): put the function back.
        for other, module in _LAZY.items():
            if other == module and isinstance(globals().get(other), ModuleType):
                globals()[other] = getattr(globals()[other], other)
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)

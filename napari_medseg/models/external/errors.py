"""The error an external model raises, and the check that its optional extra is installed."""

from __future__ import annotations

import importlib

from ..bundle import BundleError

__all__ = ["ExternalModelError", "require"]

_EXTRAS = {"nnunetv2": "nnunet", "dynamic_network_architectures": "nnunet", "monai": "monai"}


class ExternalModelError(BundleError):
    """An nnU-Net folder or MONAI bundle that cannot be opened; names the path and the problem.

    A :class:`~napari_medseg.models.bundle.BundleError`, so every caller that reports a bad
    bundle reports these the same way.
    """


def require(module: str, path: object) -> object:
    """Import ``module`` (a top-level package of an optional extra) or say which extra to install.

    Raises:
        ExternalModelError: the package is missing; the message names the pip extra.
    """
    try:
        return importlib.import_module(module)
    except ImportError as err:
        extra = _EXTRAS.get(module.split(".")[0], module)
        raise ExternalModelError(
            path, f"opening it needs {module.split('.')[0]} ({err}); install it with: pip install 'napari-medseg[{extra}]'"
        ) from None

"""Loading an external model's checkpoint (a pickle) without running code from it.

nnU-Net's ``checkpoint_final.pth`` is a pickled dict: the network's state dict, the
optimizer's, the training log (numpy scalars), ``init_args`` (the plans, a ``torch.device``)
and the trainer's name. It is read with ``torch.load(weights_only=True)``: torch's restricted
unpickler, widened only by the named numpy globals such checkpoints hold (under numpy 2 and
under numpy 1, whose module is ``numpy.core`` rather than ``numpy._core``). A file that needs
anything else is refused, naming the global it asked for.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .errors import ExternalModelError

__all__ = ["load_checkpoint", "safe_globals"]


def safe_globals() -> list:
    """The numpy globals (by name) a weights-only load may meet in an nnU-Net checkpoint."""
    core = getattr(np, "_core", None) or np.core  # numpy 2 moved numpy.core to numpy._core
    scalar = core.multiarray.scalar
    allowed: list = [np.dtype, scalar, (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar")]
    dtypes = getattr(np, "dtypes", None)  # numpy >= 1.25 pickles dtypes by their class
    for name in ("Float64DType", "Float32DType", "Int64DType", "Int32DType", "BoolDType"):
        if dtypes is not None and hasattr(dtypes, name):
            allowed.append(getattr(dtypes, name))
    return allowed


def load_checkpoint(file: Path, label: Path) -> Mapping[str, Any]:
    """The checkpoint's dict, read weights-only onto the CPU.

    Raises:
        ExternalModelError: a missing or unreadable file, or one whose unpickling would need
            a global outside torch's and :func:`safe_globals`' (the global is named).
    """
    if not file.is_file():
        raise ExternalModelError(label, f"{file.name} is missing in {file.parent.name}")
    try:
        with torch.serialization.safe_globals(safe_globals()):
            data = torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ExternalModelError(
            label, f"{file.parent.name}/{file.name} is refused: unpickling it would run or import code ({_reason(err)})"
        ) from None
    except Exception as err:  # torch raises many types for a corrupt file
        raise ExternalModelError(label, f"{file.parent.name}/{file.name} could not be read: {err}") from None
    if not isinstance(data, Mapping):
        raise ExternalModelError(label, f"{file.parent.name}/{file.name} holds {type(data).__name__}, not a checkpoint dict")
    return data


def state_dict_of(checkpoint: Mapping[str, Any], key: str, file: Path, label: Path) -> dict[str, torch.Tensor]:
    """``checkpoint[key]`` checked to be a state dict of tensors."""
    state = checkpoint.get(key)
    if not isinstance(state, Mapping) or not state or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise ExternalModelError(label, f"{file.parent.name}/{file.name} has no state dict of tensors under {key!r}")
    return dict(state)


def _reason(err: Exception) -> str:
    """What torch's weights-only unpickler refused (not its advice to disable the check)."""
    text = str(err)
    for pattern, form in (
        (r"GLOBAL (\S+) was not an allowed global", "it needs the global {}, which is not allowed"),
        (r"GLOBAL (\S+) whose module \S+ is blocked", "it needs the global {}, which is blocked"),
        (r"WeightsUnpickler error:\s*(\S[^\n]*)", "{}"),
    ):
        match = re.search(pattern, text)
        if match:
            return form.format(match.group(1))[:200]
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return (lines[-1] if lines else type(err).__name__)[:200]

"""Calibrate a bundle's out-of-distribution threshold on in-distribution images.

    python bench/calibrate_ood.py [--model brain-tissue-unet] [--synthetic 24] [--augmented 6] [--check | --check-only]

The score is :data:`napari_medseg.uncertainty.ood.MAIN_SCORE` (mean normalised entropy of
the plain prediction over its predicted foreground, see ``napari_medseg/uncertainty/ood.py``)
computed, as :func:`~napari_medseg.uncertainty.estimate_uncertainty` does, on the model grid.

In-distribution images (never validation scans):

- ``synthetic``: small volumes of 2.5D slabs drawn by the training synthesiser
  (:class:`~napari_medseg.training.label_synth.LabelSynthesizer` over the label maps in
  ``shared/data/synthseg-label-maps``, another seed than training), each volume a stack of
  ``--slices`` slabs (skipped with a note when the maps are missing, or for 3D models);
- ``augmented``: the shipped sample volume (MNI ICBM152 T1) and copies with a random gamma,
  bias field, Rician noise, blur, a +-10% change of voxel size per axis and, for half of
  them, thick slices (2-4 mm) along a random axis, as the training synthesiser also draws.

Threshold = max(mean + 3 sd, max) * (1 + margin) over all of them (:func:`calibrate_ood`). The script prints
JSON whose ``"config_extra_ood"`` is the entry to store as ``config.extra["ood"]`` in the
bundle's ``config.json``. With ``--check`` it also runs the whole OOD decision
(:func:`~napari_medseg.uncertainty.assess_ood`: the score against the new threshold, the
stated modality, Hounsfield air, the predicted brain volume; see
``napari_medseg/uncertainty/ood_signals.py``), without using them for the threshold, on the
real scans of ``bench/ood_scans.py``: brain MRIs (dev subject, MNI sample, full-head
template, MPRAGE, sample head: none may be flagged) and real CTs from the pydicom and
pydicom-data wheels (head, brain-masked head, abdomen, neck: all must be), and reports the
margins: per MR the score as a share of the threshold and the brain volume against its
range, per CT the share of air voxels against its limit. ``--check-only`` skips the
calibration and checks the bundle's stored decision.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from scipy import ndimage

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
LABEL_MAPS = SHARED / "synthseg-label-maps"


def volume_score(volume, model, device, amp) -> dict:
    """OOD signals of the plain prediction of ``volume``, on the model grid."""
    from napari_medseg.inference.engine import predict_probabilities
    from napari_medseg.preprocess import prepare_for_model
    from napari_medseg.uncertainty import ood_score

    config = model.config
    prepared = prepare_for_model(volume, config)
    probabilities = predict_probabilities(model, prepared.image, device=device, amp=amp)
    return ood_score(prepared.scan_part(probabilities), spacing=prepared.geometry.spacing)


def synthetic_scores(model, device, amp, volumes: int, slices: int, seed: int) -> list[float]:
    import torch

    from napari_medseg.training.label_maps import load_label_maps
    from napari_medseg.training.label_synth import LabelSynthesizer, SynthSettings
    from napari_medseg.uncertainty import ood_score
    from napari_medseg.uncertainty.ood import MAIN_SCORE

    config = model.config
    if not LABEL_MAPS.is_dir() or config.spatial_dims != 2:
        print(f"note: no label maps at {LABEL_MAPS} or not a 2.5D model, synthetic source skipped", file=sys.stderr)
        return []
    offsets = tuple(float(o) for o in config.extra.get("context_offsets_mm", (0.0,)))
    patch = tuple(config.patch_size) if len(config.patch_size) == 2 else (176, 208)
    synthesizer = LabelSynthesizer(load_label_maps(LABEL_MAPS), SynthSettings(), seed=seed)
    scores = []
    model.eval().to(device)
    for _ in range(volumes):
        probabilities = []
        for start in range(0, slices, 8):
            image, _ = synthesizer.slabs(min(8, slices - start), patch=patch, offsets_mm=offsets)
            with torch.inference_mode(), torch.autocast(device.type, dtype=amp or torch.float32, enabled=amp is not None):
                logits = model(image.to(device))
            probabilities.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        stack = np.concatenate(probabilities).transpose(1, 0, 2, 3)  # (K, slices, H, W)
        scores.append(float(ood_score(stack, spacing=config.target_spacing)[MAIN_SCORE]))
    return scores


def augmented_volumes(count: int, seed: int):
    """The sample volume, then ``count`` randomly augmented copies."""
    import torch

    from napari_medseg.io import read_volume
    from napari_medseg.resources import sample_volume_path
    from napari_medseg.training.augment import bias_field, gamma, rician_noise
    from napari_medseg.types import Geometry, Volume

    volume = read_volume(sample_volume_path())
    yield "sample", volume
    rng = np.random.default_rng(seed)
    generator = torch.Generator().manual_seed(seed)
    image = torch.from_numpy(volume.array.astype(np.float32))[None]  # (1, z, y, x): z as a field axis
    for i in range(count):
        out = gamma(image, 0.3, generator) * bias_field(image.shape, 0.3, generator)
        out = rician_noise(out, torch.tensor(rng.uniform(0.0, 0.03)), generator)[0].numpy()
        out = ndimage.gaussian_filter(out, rng.uniform(0.0, 1.2))
        spacing = [float(s * rng.uniform(0.9, 1.1)) for s in volume.spacing]
        if i % 2:  # thick slices along a random axis
            axis, factor = int(rng.integers(3)), int(rng.integers(2, 5))
            out = ndimage.gaussian_filter1d(out, factor / 2.355, axis=axis)
            out = np.take(out, np.arange(0, out.shape[axis], factor), axis=axis)
            spacing[axis] *= factor
        geometry = Geometry(tuple(spacing), volume.geometry.origin, volume.geometry.direction)
        yield f"augmented-{i}", Volume(np.ascontiguousarray(out), geometry, modality=volume.modality)


def check_decision(model, config, device, amp) -> dict:
    """The OOD decision of ``model`` with ``config`` on every real scan of ``ood_scans``,
    with its signals and the margins (see the module docstring)."""
    from ood_scans import ct_volumes, mr_volumes

    from napari_medseg.inference.engine import predict_probabilities
    from napari_medseg.inference.locator import find_brain
    from napari_medseg.preprocess import prepare_for_model
    from napari_medseg.uncertainty import assess_ood
    from napari_medseg.uncertainty.ood_signals import AIR_FRACTION, VOLUME_FACTOR, expected_brain_range

    expected = expected_brain_range(config)
    checks = {}
    for kind, volumes in (("mr", mr_volumes()), ("ct", ct_volumes())):
        for name, volume in volumes:
            prepared = prepare_for_model(volume, config)
            brain, _ = find_brain(model, prepared.image, prepared.geometry, device)  # as segment() runs the network
            probabilities = predict_probabilities(model, prepared.image, device=device, amp=amp, within=brain)
            result = assess_ood(prepared.scan_part(probabilities), config, spacing=prepared.geometry.spacing, scan=volume,
                                within=prepared.scan_part(brain))  # fmt: skip
            del probabilities
            signals = {key: value["value"] for key, value in result.as_dict()["signals"].items()}
            entry = {"must_flag": kind == "ct", "flag": result.flag, "flagged_by": result.flagged_by, "signals": signals}
            if kind == "mr" and result.threshold:
                entry["score_over_threshold"] = round(result.score / result.threshold, 3)
            if kind == "mr" and expected is not None:
                _, low, high = expected
                entry["brain_ml_within"] = [round(low / VOLUME_FACTOR, 1), round(high * VOLUME_FACTOR, 1)]
            if kind == "ct":
                entry["air_over_limit"] = round(signals["hounsfield_air"] / AIR_FRACTION, 2) if signals["hounsfield_air"] is not None else None
            checks[f"{kind}:{name}"] = entry
            print(f"{kind}:{name}: flag {result.flag} ({', '.join(result.flagged_by) or 'none'}) {signals}", file=sys.stderr, flush=True)
    wrong = [name for name, entry in checks.items() if bool(entry["flag"]) != entry["must_flag"]]
    return {"scans": checks, "wrong": wrong}


def _json_value(value):
    """JSON for what ``json`` does not know: a model config's read-only mappings."""
    if isinstance(value, Mapping):
        return dict(value)
    raise TypeError(f"{type(value).__name__} is not JSON data")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="brain-tissue-unet", help="bundle name or path")
    parser.add_argument("--synthetic", type=int, default=24, help="synthetic small volumes")
    parser.add_argument("--slices", type=int, default=24, help="slabs per synthetic volume")
    parser.add_argument("--augmented", type=int, default=6, help="augmented copies of the sample volume")
    parser.add_argument("--sigmas", type=float, default=3.0)
    parser.add_argument("--margin", type=float, default=0.5, help="relative margin above the rule's value")
    parser.add_argument("--seed", type=int, default=20261)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--check", action="store_true", help="also run the OOD decision on real MRs and CTs")
    parser.add_argument("--check-only", action="store_true", help="only check the bundle's stored decision")
    args = parser.parse_args()

    from napari_medseg.inference import autocast_dtype, select_device
    from napari_medseg.models import BundleError, load_model
    from napari_medseg.uncertainty import ood_calibration
    from napari_medseg.uncertainty.ood import MAIN_SCORE

    try:
        model = load_model(args.model, device=args.device)
    except BundleError as error:
        sys.exit(f"model {args.model!r} not available ({error}); train the shipped bundles first")
    device = select_device(args.device)
    amp = autocast_dtype(device, "auto")
    started = time.perf_counter()
    if args.check_only:
        report = {"model": args.model, "stored_ood": model.config.extra.get("ood"),
                  "check": check_decision(model, model.config, device, amp)}  # fmt: skip
        report["seconds"] = round(time.perf_counter() - started, 1)
        print(json.dumps(report, indent=2, default=_json_value))
        return

    synthetic = synthetic_scores(model, device, amp, args.synthetic, args.slices, args.seed)
    print(f"synthetic: {[round(s, 4) for s in synthetic]}", file=sys.stderr, flush=True)
    augmented = {}
    for name, volume in augmented_volumes(args.augmented, args.seed):
        augmented[name] = volume_score(volume, model, device, amp)
        print(f"{name}: {augmented[name][MAIN_SCORE]:.4f}", file=sys.stderr, flush=True)
    scores = synthetic + [signals[MAIN_SCORE] for signals in augmented.values()]
    sources = f"{len(synthetic)} synthetic volumes of {args.slices} slabs, sample volume + {args.augmented} augmented copies"
    entry = ood_calibration(scores, sigmas=args.sigmas, margin=args.margin, source=sources)
    report = {
        "model": args.model,
        "score": MAIN_SCORE,
        "synthetic": {"n": len(synthetic), "mean": _mean(synthetic), "max": max(synthetic, default=None)},
        "augmented": {name: {k: _round(v) for k, v in signals.items() if k != "class_ml"} for name, signals in augmented.items()},
        "config_extra_ood": entry,
    }
    if args.check:
        config = dataclasses.replace(model.config, extra={**model.config.extra, "ood": entry})
        report["check"] = check_decision(model, config, device, amp)
    report["seconds"] = round(time.perf_counter() - started, 1)
    print(json.dumps(report, indent=2, default=_json_value))


def _mean(values: list[float]) -> float | None:
    return round(float(np.mean(values)), 6) if values else None


def _round(value):
    return round(value, 6) if isinstance(value, float) else value


if __name__ == "__main__":
    main()

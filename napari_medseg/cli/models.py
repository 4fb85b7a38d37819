"""``medseg models``: list, show, rename and delete model bundles; calibrate or forget the OOD
threshold of an nnU-Net folder or MONAI bundle."""

from __future__ import annotations

import argparse
import json


ACTIONS = ("list", "show", "rename", "delete")
OOD_ACTIONS = ("calibrate-ood", "reset-ood")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list shipped and user model bundles, nnU-Net folders under $nnUNet_results and MONAI bundles under "
        "$NAPARI_MEDSEG_MONAI_BUNDLES (also show, rename, delete; calibrate-ood, reset-ood for those folders)",
        description="Model bundles: shipped ones (read-only) and the user's fine-tuned versions. An nnU-Net folder "
        "or MONAI bundle calibrates its OOD threshold on its first scans, kept in the user's data folder; "
        "calibrate-ood calibrates it from the given in-distribution scans instead, reset-ood forgets it.",
    )
    parser.add_argument("action", nargs="?", default="list", choices=[*ACTIONS, *OOD_ACTIONS])
    parser.add_argument("names", nargs="*", help="show NAME | rename OLD NEW | delete NAME | calibrate-ood MODEL SCAN "
                        "SCAN... | reset-ood MODEL")  # fmt: skip
    parser.add_argument("--device", default="auto", help="calibrate-ood: auto, cpu, cuda, cuda:N or mps (default auto)")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import catalog
    from ..models.bundle import read_config, read_meta

    if args.action in OOD_ACTIONS:
        return _run_ood(args)
    if args.action == "list":
        infos = catalog.list_bundles()
        rows = [
            {
                "name": info.name,
                "architecture": info.architecture,
                "classes": list(info.classes),
                "version": info.version,
                "shipped": info.shipped,
                "parent": info.parent,
                "path": str(info.path),
            }
            for info in infos
        ] + _external_rows()
        if args.json:
            print(json.dumps(rows, indent=2))
        elif not rows:
            print("no model bundles found")
        else:
            print(f"{'name':32} {'arch':10} {'ver':>4} {'kind':8} classes")
            for row in rows:
                kind = row.get("kind") or ("shipped" if row["shipped"] else "user")
                print(f"{row['name']:32} {row['architecture']:10} {row['version']:>4} {kind:8} {', '.join(row['classes'])}")
        return 0
    expected = {"show": 1, "rename": 2, "delete": 1}[args.action]
    if len(args.names) != expected:
        raise ValueError(f"'medseg models {args.action}' takes {expected} name(s), got {args.names}")
    if args.action == "show":
        path = catalog.resolve_bundle(args.names[0])
        print(json.dumps({"path": str(path), "config": read_config(path).to_dict(), "meta": read_meta(path)}, indent=2))
    elif args.action == "rename":
        print(catalog.rename_bundle(*args.names))
    else:
        catalog.delete_bundle(args.names[0])
        print(f"deleted {args.names[0]}")
    return 0


def _external_rows() -> list[dict]:
    """nnU-Net trained-model folders under ``$nnUNet_results`` and MONAI bundles under
    ``$NAPARI_MEDSEG_MONAI_BUNDLES`` (use them with ``--model PATH``)."""
    from ..models.external import find_models

    return [
        {
            "name": info.name,
            "architecture": f"{info.kind}-{info.configuration}",
            "classes": list(info.classes),
            "version": "",
            "shipped": False,
            "kind": info.kind,
            "parent": None,
            "folds": list(info.folds),
            "path": str(info.path),
        }
        for info in find_models()
    ]


def _run_ood(args: argparse.Namespace) -> int:
    """``calibrate-ood MODEL SCAN...`` and ``reset-ood MODEL`` (external models only)."""
    from ..models import external

    if args.action == "reset-ood" and len(args.names) != 1:
        raise ValueError(f"'medseg models reset-ood' takes one MODEL, got {args.names}")
    if args.action == "calibrate-ood" and len(args.names) < 3:
        raise ValueError(f"'medseg models calibrate-ood' takes MODEL and at least 2 scans, got {args.names}")
    model_path = args.names[0]
    if not external.detect(model_path):
        raise ValueError(f"{model_path!r} is neither an nnU-Net model folder nor a MONAI bundle; our bundles carry "
                         "their OOD threshold in their config.json")  # fmt: skip
    if args.action == "reset-ood":
        from ..models.external.ood_store import forget, store_file

        file = store_file(model_path)
        forgot = forget(file)
        print(f"forgot the OOD calibration of {model_path} ({file})" if forgot else f"{model_path} had no OOD calibration")
        return 0
    return _calibrate(args, model_path, args.names[1:])


def _calibrate(args: argparse.Namespace, model_path: str, scans: list[str]) -> int:
    """Segment ``scans`` with the model, store the threshold from their scores, print it."""
    from ..models import load_model
    from ..uncertainty.ood_first_use import calibrate_external

    model = load_model(model_path, device="cpu")
    entry, left_out = calibrate_external(model, scans, device=args.device)
    if args.json:
        print(json.dumps({"model": model_path, "store": str(model.ood_store), "ood": entry, "left_out": left_out}, indent=2))
        return 0
    for line in left_out:
        print(f"left out {line}")
    calibration = entry["calibration"]
    print(f"OOD threshold of {model_path}: {entry['threshold']:.4f} from {calibration['n']} scans (scores "
          f"{calibration['mean']:.4f} +- {calibration['sd']:.4f}, max {calibration['max']:.4f}); kept in {model.ood_store}")
    return 0

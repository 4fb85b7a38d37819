"""``medseg models``: list, show, rename and delete model bundles."""

from __future__ import annotations

import argparse
import json


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "models",
        help="list shipped and user model bundles, nnU-Net folders under $nnUNet_results and MONAI bundles under "
        "$NAPARI_MEDSEG_MONAI_BUNDLES (also show, rename, delete)",
        description="Model bundles: shipped ones (read-only) and the user's fine-tuned versions.",
    )
    parser.add_argument("action", nargs="?", default="list", choices=["list", "show", "rename", "delete"])
    parser.add_argument("names", nargs="*", help="show NAME | rename OLD NEW | delete NAME")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from ..models import catalog
    from ..models.bundle import read_config, read_meta

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

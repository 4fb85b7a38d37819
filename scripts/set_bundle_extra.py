"""Update the post-processing or OOD entry of a bundle's config (weights untouched).

    python scripts/set_bundle_extra.py BUNDLE --postprocess-json FILE
    python scripts/set_bundle_extra.py BUNDLE --ood-json FILE
    python scripts/set_bundle_extra.py BUNDLE --slice-margin-mm 32

Rewrites ``config.json`` atomically after validating it; used when post-processing, the
OOD threshold or the slice margin (inference settings) are decided after training.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from napari_medseg.config import ModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--postprocess-json", type=Path, help='JSON file with the config.extra["postprocess"] entry')
    parser.add_argument("--ood-json", type=Path, help='JSON file with the config.extra["ood"] entry')
    parser.add_argument("--slice-margin-mm", type=float, help="air (mm) a 2D model sees around each slice's foreground")
    args = parser.parse_args()
    config_path = args.bundle / "config.json"
    data = json.loads(config_path.read_text())
    extra = dict(data.get("extra", {}))
    if args.postprocess_json:
        extra["postprocess"] = json.loads(args.postprocess_json.read_text())
    if args.ood_json:
        extra["ood"] = json.loads(args.ood_json.read_text())
    if args.slice_margin_mm is not None:
        extra["slice_margin_mm"] = args.slice_margin_mm
    data["extra"] = extra
    text = ModelConfig.from_dict(data).to_json()
    partial = config_path.with_suffix(".json.part")
    partial.write_text(text)
    os.replace(partial, config_path)
    print(f"updated {config_path}")


if __name__ == "__main__":
    main()

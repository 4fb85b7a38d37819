"""Update the post-processing or OOD entry of a bundle's config (weights untouched).

    python scripts/set_bundle_extra.py BUNDLE --postprocess-from-training-script
    python scripts/set_bundle_extra.py BUNDLE --ood-json FILE

Rewrites ``config.json`` atomically after validating it; used when post-processing or the
OOD threshold is calibrated after training.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from napari_medseg.config import ModelConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--postprocess-from-training-script", action="store_true")
    parser.add_argument("--ood-json", type=Path, help='JSON file with the config.extra["ood"] entry')
    args = parser.parse_args()
    config_path = args.bundle / "config.json"
    data = json.loads(config_path.read_text())
    extra = dict(data.get("extra", {}))
    if args.postprocess_from_training_script:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from train_default import POSTPROCESS

        extra["postprocess"] = POSTPROCESS
    if args.ood_json:
        extra["ood"] = json.loads(args.ood_json.read_text())
    data["extra"] = extra
    text = ModelConfig.from_dict(data).to_json()
    partial = config_path.with_suffix(".json.part")
    partial.write_text(text)
    os.replace(partial, config_path)
    print(f"updated {config_path}")


if __name__ == "__main__":
    main()

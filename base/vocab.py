"""The closed sets of values that command-line options take (stages, demo sizes and steps,
download formats, resize modes, MMC4 variants, image orders, ablation studies), in one light
module: the modules that validate these values import them from here, and
pipeline/cli/choices.py turns them into the choices `--help` lists — without importing torch,
Ray or the demo to print help."""
from __future__ import annotations

# train/stages.py: the VILA recipe's stages, in training order
STAGE_NAMES = ("projector", "pretrain", "sft")
# curation/world.py PRESETS: sizes of the embedded demo world
WORLD_SIZES = ("demo", "tiny")
# pipeline/jobs/demo.py STEPS: the demo's steps, in order (`vilactl demo --until STEP`)
DEMO_STEPS = ("world", "mirror", "register-coyo", "register-mmc4", "register-sets",
              "download-coyo", "download-mmc4", "train-clip", "score-coyo", "curate-coyo",
              "build-mmc4", "blends", "train-projector", "train-pretrain", "train-sft", "eval",
              "report")
# curation/download_unit.py: what a download unit writes (MMC4: parquet only)
DOWNLOAD_FORMATS = ("parquet", "webdataset")
# img2dataset's ResizeMode names (curation/fetch.py passes the name through)
RESIZE_MODES = ("keep_ratio", "center_crop", "border", "no", "keep_ratio_largest")
# curation/mmc4_variants.py: the MMC4 variants `vilactl build` makes, and which images it keeps
MMC4_VARIANTS = ("interleaved", "after", "shuffled", "pairs")
IMAGE_ORDERS = ("page", "sentence")
# pipeline/jobs/ablate_plans.py: `vilactl ablate --study`, the paper's Tables 3, 1 and 4
ABLATE_STUDIES = ("data", "freeze", "sft-text")
# pipeline/cli/output.py: `vilactl sql --format`
SQL_FORMATS = ("table", "csv", "json", "parquet")

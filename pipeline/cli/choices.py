"""The choices of the options that take one of a closed set of values, as str Enums built from
base/vocab.py (the same constants the jobs validate with): typer lists them in `--help` and
refuses any other value with one usage line (exit 2) before the command starts."""
from __future__ import annotations

from enum import Enum

from vilactl.base import vocab
from vilactl.base.kinds import Kind


def _choices(name: str, values) -> type[Enum]:
    """A str Enum whose members are named and valued by `values`, in their order."""
    return Enum(name, [(str(v), str(v)) for v in values], type=str)


Stage = _choices("Stage", vocab.STAGE_NAMES)
WorldSize = _choices("WorldSize", vocab.WORLD_SIZES)
DemoStep = _choices("DemoStep", vocab.DEMO_STEPS)
DownloadFormat = _choices("DownloadFormat", vocab.DOWNLOAD_FORMATS)
ResizeMode = _choices("ResizeMode", vocab.RESIZE_MODES)
Mmc4Variant = _choices("Mmc4Variant", vocab.MMC4_VARIANTS)
ImageOrder = _choices("ImageOrder", vocab.IMAGE_ORDERS)
SqlFormat = _choices("SqlFormat", vocab.SQL_FORMATS)
Study = _choices("Study", vocab.ABLATE_STUDIES)
DatasetKind = _choices("DatasetKind", Kind)
Corpus = _choices("Corpus", ("coyo", "mmc4"))
CoyoCorpus = _choices("CoyoCorpus", ("coyo",))     # what `curate` selects from
Mmc4Corpus = _choices("Mmc4Corpus", ("mmc4",))     # what `build` builds from


def value(choice: Enum | None) -> str | None:
    """The plain string of a choice (None stays None), for the jobs and the catalog."""
    return None if choice is None else choice.value

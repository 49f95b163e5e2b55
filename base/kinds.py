"""The kinds of dataset the catalog records: one vocabulary for catalog/, curation/ and
pipeline/ instead of bare strings repeated across files."""
from __future__ import annotations

from enum import Enum


class Kind(str, Enum):
    """What a catalog dataset holds (`datasets.kind`); compares equal to its string."""
    COYO_METADATA = "coyo-metadata"        # COYO-700M metadata Parquet, registered in place
    COYO_IMAGES = "coyo-images"            # COYO pairs with their downloaded images
    MMC4_DOCS = "mmc4-docs"                # MMC4 documents, normalised to Parquet
    MMC4_IMAGES = "mmc4-images"            # MMC4 documents with their downloaded images
    CLIP_SCORES = "clip-scores"            # `vilactl score` output
    MMC4_INTERLEAVED = "mmc4-interleaved"  # `vilactl build` variants (training samples)
    MMC4_AFTER = "mmc4-after"
    MMC4_SHUFFLED = "mmc4-shuffled"
    MMC4_PAIRS = "mmc4-pairs"
    BLEND = "blend"
    SAMPLES = "samples"                    # any training-sample Parquet (`register samples`)
    INSTRUCT_LLAVA = "instruct-llava"
    INSTRUCT_TEXT = "instruct-text"
    INSTRUCT_VQA = "instruct-vqa"          # the demo world's sets
    INSTRUCT_CAPTION = "instruct-caption"
    EVAL_VQA = "eval-vqa"
    EVAL_CAPTION = "eval-caption"
    EVAL_TEXT = "eval-text"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__

    @classmethod
    def mmc4_variant(cls, variant: str) -> Kind:
        return cls(f"mmc4-{variant}")

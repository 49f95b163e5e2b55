"""The catalog's tables, as numbered migrations.

Column names here are a contract: users' SQL and docs/catalog.md rely on them. Add a column or a
table with a new migration (never edit an applied one); `SCHEMA_VERSION` is the newest this code
knows, and a catalog written by a newer vilactl is refused rather than misread.
"""

MIGRATIONS: dict[int, list[str]] = {
    1: [
        """CREATE TABLE runs (
            id VARCHAR PRIMARY KEY,
            command VARCHAR NOT NULL,      -- the command line, e.g. 'vilactl register coyo ...'
            args JSON,
            started_at TIMESTAMP NOT NULL,
            finished_at TIMESTAMP,
            status VARCHAR NOT NULL,       -- running | ok | failed | incomplete
            error VARCHAR,
            counts JSON,
            versions JSON                  -- vilactl, python, pyarrow, duckdb, ...
        )""",
        """CREATE TABLE datasets (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,         -- coyo-metadata | mmc4-docs | samples | ...
            format VARCHAR NOT NULL,       -- parquet | jsonl | jsonl.zip | webdataset
            uri VARCHAR NOT NULL,          -- folder or glob the data lives at
            parents VARCHAR[],             -- lineage: names of the datasets this was made from
            params JSON,
            run_id VARCHAR,
            num_samples BIGINT,
            num_images BIGINT,
            num_texts BIGINT,
            num_bytes BIGINT,
            view_name VARCHAR,             -- samples_<name>, a view over the Parquet data
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE shards (
            dataset VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            rows BIGINT,
            bytes BIGINT,
            checksum VARCHAR,              -- sha256 of the file
            status VARCHAR NOT NULL,       -- done | failed
            source VARCHAR,                -- the input file this shard was made from, if any
            run_id VARCHAR,
            created_at TIMESTAMP NOT NULL,
            PRIMARY KEY (dataset, path)
        )""",
        """CREATE TABLE selections (
            name VARCHAR PRIMARY KEY,
            dataset VARCHAR NOT NULL,      -- the dataset the selection was taken from
            score_expr VARCHAR,
            k BIGINT,
            cutoff DOUBLE,                 -- score of the last kept row
            num_candidates BIGINT,
            num_selected BIGINT,
            params JSON,
            run_id VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE blends (
            name VARCHAR PRIMARY KEY,
            uri VARCHAR NOT NULL,
            seed BIGINT,
            num_samples BIGINT,
            num_images BIGINT,
            num_text_tokens BIGINT,
            params JSON,
            run_id VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE blend_components (
            blend VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            weight DOUBLE,                 -- requested share of images (of samples if text-only)
            achieved_share DOUBLE,
            num_samples BIGINT,
            num_images BIGINT,
            repeats BIGINT,
            PRIMARY KEY (blend, dataset)
        )""",
        """CREATE TABLE checkpoints (
            id VARCHAR PRIMARY KEY,
            stage VARCHAR NOT NULL,        -- projector | pretrain | sft
            run_id VARCHAR,
            path VARCHAR NOT NULL,
            step BIGINT,
            blend VARCHAR,
            parent VARCHAR,                -- checkpoint this stage started from
            metrics JSON,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE TABLE evals (
            id VARCHAR PRIMARY KEY,
            checkpoint VARCHAR NOT NULL,
            dataset VARCHAR NOT NULL,
            task VARCHAR NOT NULL,         -- vqa | caption | text
            shots INTEGER NOT NULL,
            metric VARCHAR NOT NULL,       -- accuracy | cider | ...
            value DOUBLE,
            num_examples BIGINT,
            run_id VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
        """CREATE VIEW lineage AS
            SELECT name AS dataset, unnest(parents) AS parent FROM datasets""",
    ],
    2: [
        # Per-shard counts of the stage that wrote it (attempted, succeeded, failed by reason…).
        "ALTER TABLE shards ADD COLUMN counts JSON",
    ],
    3: [
        # Text tokens of sample datasets (whitespace words unless a tokenizer is configured).
        "ALTER TABLE datasets ADD COLUMN num_text_tokens BIGINT",
    ],
    4: [
        # Blends: their parent datasets; per component the unit its weight counts (images, or
        # samples for a text-only component) and the text tokens it contributed.
        "ALTER TABLE blends ADD COLUMN parents VARCHAR[]",
        "ALTER TABLE blend_components ADD COLUMN unit VARCHAR",
        "ALTER TABLE blend_components ADD COLUMN num_text_tokens BIGINT",
    ],
    5: [
        # The output a run writes (`datasets/<name>`, `checkpoints/<run>`, …): one process at a
        # time holds it, and a run of it left `running` by a killed process becomes
        # `incomplete` when the next run of the same output starts.
        "ALTER TABLE runs ADD COLUMN target VARCHAR",
    ],
    6: [
        # `num_text_tokens` counted whitespace-separated words, not a tokenizer's tokens: the
        # columns say so now (the one rename the catalog has made; see docs/catalog.md).
        "ALTER TABLE datasets RENAME COLUMN num_text_tokens TO num_text_words",
        "ALTER TABLE blends RENAME COLUMN num_text_tokens TO num_text_words",
        "ALTER TABLE blend_components RENAME COLUMN num_text_tokens TO num_text_words",
    ],
    7: [
        # Models exported as Hugging Face LLaVA folders (`vilactl export`): where, what they
        # were made from (the checkpoint chain and the blends it was trained on), a checksum.
        """CREATE TABLE exports (
            path VARCHAR PRIMARY KEY,      -- the exported folder (absolute)
            checkpoint VARCHAR,            -- catalog checkpoint id; NULL for a bare folder
            source_path VARCHAR NOT NULL,  -- the checkpoint folder it was made from
            format VARCHAR NOT NULL,       -- llava-hf
            checksum VARCHAR NOT NULL,     -- sha256 of the sorted `sha256  file` lines
            files JSON,                    -- {file: {bytes, sha256}}
            num_bytes BIGINT,
            checkpoints VARCHAR[],         -- this checkpoint, then each one it started from
            blends VARCHAR[],              -- the blends those checkpoints were trained on
            params JSON,                   -- tower, projector, LoRA merged, parity measured
            run_id VARCHAR,
            created_at TIMESTAMP NOT NULL
        )""",
    ],
    8: [
        # Each shard file's modification time when it was recorded (os.stat st_mtime_ns), so
        # that a command can notice a file changed behind the catalog's back with a stat
        # (catalog/integrity.py); NULL for shards recorded before this column existed.
        "ALTER TABLE shards ADD COLUMN mtime_ns BIGINT",
    ],
}

SCHEMA_VERSION = max(MIGRATIONS)

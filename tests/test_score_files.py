"""Score files in vilactl's layout (sorted best first, NaN stored as null) and curate's passes
over them: the exact cutoff from score files equals a numpy lexsort reference."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vilactl.curation import histogram_select as hs
from vilactl.curation import shard_select
from vilactl.curation.score_files import write_score_file
from vilactl.curation.shard_select import ShardSource


def reference(scores, ids, k):
    ok = ~np.isnan(scores)
    order = np.lexsort((ids[ok], -scores[ok]))
    return ids[ok][order[:k]]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """60,000 pairs in 5 score files of unequal size: 3-decimal scores, NaN and nulls."""
    folder = tmp_path_factory.mktemp("scores")
    rng = np.random.default_rng(3)
    n = 60_000
    scores = np.round(rng.normal(0.3, 0.05, n), 3).astype(np.float32)
    scores[rng.choice(n, 40, replace=False)] = np.nan
    ids = rng.choice(10**12, size=n, replace=False).astype(np.int64)
    nulls = np.zeros(n, bool)
    nulls[rng.choice(n, 30, replace=False)] = True
    paths = []
    for j, (s, i, m) in enumerate(zip(*(np.array_split(a, [5_000, 25_000, 26_000, 40_000])
                                       for a in (scores, ids, nulls)))):
        path = folder / f"part-{j}.parquet"
        write_score_file(path, pa.table({"id": i, "score": pa.array(s, mask=m)}))
        paths.append(path)
    scores = scores.astype(np.float64)
    scores[nulls] = np.nan
    return paths, scores, ids


def test_layout_sorted_best_first_with_nulls(files):
    paths, *_ = files
    t = pq.read_table(paths[1])
    s, i = t.column("score"), t.column("id").to_numpy()
    valid = s.drop_null().to_numpy()
    assert not np.isnan(valid).any() and s.null_count > 0      # NaN stored as null
    assert (np.diff(valid) <= 0).all()                           # score desc
    ties = np.diff(valid) == 0
    assert (np.diff(i[:len(valid)])[ties] > 0).all()             # id asc within a score
    assert pc_null_tail(s)                                       # nulls after all scores


def pc_null_tail(col) -> bool:
    valid = np.asarray(col.is_valid())
    return not valid[np.argmin(valid):].any() if not valid.all() else True


@pytest.mark.parametrize("k_of", [lambda n: 1, lambda n: 1000, lambda n: n // 10,
                                  lambda n: n - 100, lambda n: n + 5])
def test_cutoff_over_score_files_equals_lexsort(files, k_of):
    paths, scores, ids = files
    k = k_of(len(ids))
    sources = [ShardSource(str(p), scores=str(p)) for p in paths]   # data = its score file
    total = hs.Histogram()
    for src in sources:
        total.merge(shard_select.shard_histogram(src))
    assert total.seen == len(ids) and total.excluded == 70
    b = hs.boundary(total, k)
    parts = [shard_select.shard_boundary(src, b) for src in sources]
    cutoff = hs.exact_cutoff([(keys, got_ids) for _, keys, got_ids in parts], b.need)
    want = reference(scores, ids, k)
    assert set(ids[cutoff.keep(scores, ids)].tolist()) == set(want.tolist())
    assert sum(above for above, _, _ in parts) + b.need == min(k, len(want))

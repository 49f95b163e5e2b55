"""Score files in vilactl's layout: sorted best first, nulls counted, and a top-K that reads only
the row groups that can hold a selected pair — still equal to a numpy lexsort reference."""
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from vilactl.curation.score_files import (
    ROW_GROUP,
    SKETCH,
    bound_key,
    read_candidates,
    read_footer,
    select_files,
    write_score_file,
)
from vilactl.curation.topk import order_key


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
    paths, scores, _ = files
    t = pq.read_table(paths[1])
    s, i = t.column("score"), t.column("id").to_numpy()
    valid = s.drop_null().to_numpy()
    assert not np.isnan(valid).any() and s.null_count > 0      # NaN stored as null
    assert (np.diff(valid) <= 0).all()                           # score desc
    ties = np.diff(valid) == 0
    assert (np.diff(i[:len(valid)])[ties] > 0).all()             # id asc within a score
    # The footer index agrees with the data: row groups, nulls and maxima, and the sketch.
    for p in paths:
        meta, table = pq.read_metadata(p), pq.read_table(p)
        groups = read_footer(p).groups
        assert [g[0] for g in groups] == [meta.row_group(i).num_rows
                                          for i in range(meta.num_row_groups)]
        starts = np.cumsum([0] + [g[0] for g in groups])
        for (rows, nulls, top), a in zip(groups, starts):
            part = table.column("score").slice(a, rows)
            assert nulls == part.null_count
            assert top == (None if nulls == rows else float(part[0].as_py()))
        valid = table.column("score").drop_null().to_numpy()
        assert [v for v, _ in read_footer(p).proofs] == valid[SKETCH - 1::SKETCH].tolist()
    assert meta.row_group(0).num_rows == ROW_GROUP
    assert sum(g[1] for p in paths for g in read_footer(p).groups) == np.isnan(scores).sum()


@pytest.mark.parametrize("k_of", [lambda n: 1, lambda n: n // 2, lambda n: n - 1,
                                  lambda n: n, lambda n: n + 5])
def test_select_files_equals_lexsort(files, k_of):
    paths, scores, ids = files
    k = k_of(len(scores))
    sel = select_files(paths, k)
    assert sel.result()[1].tolist() == reference(scores, ids, k).tolist()
    assert sel.seen == len(scores) and sel.excluded_nan == np.isnan(scores).sum() == 70


def test_footer_bound_skips_row_groups(files):
    paths, scores, ids = files
    k = 500
    footers = [read_footer(p) for p in paths]
    threshold = bound_key(footers, k)
    kth = reference(scores, ids, k)[-1]
    assert 0 < threshold <= order_key(scores[ids == kth])[0]  # a true lower bound
    groups = sum(len(f.groups) for f in footers)
    read = sum(1 for f in footers for _, _, top in f.groups
               if top is not None and order_key(np.array([top]))[0] >= threshold)
    # Each file's leading row group, and one more where the bound's ties spill over.
    assert groups == 10 and read <= len(paths) + 1
    part = read_candidates(paths[1], k, int(threshold))
    assert part.seen == 20_000  # skipped row groups are still counted


def test_other_files_are_read_whole(files, tmp_path):
    paths, scores, ids = files
    plain = tmp_path / "plain.parquet"
    pq.write_table(pa.concat_tables(pq.read_table(p) for p in paths).replace_schema_metadata(),
                   plain, row_group_size=4096)
    assert read_footer(plain) is None
    sel = select_files([plain], 1234)
    assert sel.result()[1].tolist() == reference(scores, ids, 1234).tolist()

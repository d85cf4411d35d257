"""Block scoring and top-N selection against a brute-force numpy reference."""
import numpy as np
import pandas as pd
import pytest
import torch

from cfmodel.model import ModelArgs, head_module, sigmoid_range
from cfmodel.model.topn import BlockScorer, ItemTable, group_width, mask_excluded, top_n, top_n_grouped


Y_RANGE = (0.0, 5.5)


def _head(y_range=Y_RANGE):
    """The head of a dot_bias model with this range: what the scorer applies to the chosen scores."""
    return head_module(ModelArgs("dot_bias", 0, 0, 1, list(y_range)), {})


def _table(n_items=40, k=5, seed=0):
    rng = np.random.default_rng(seed)
    return ItemTable(ids=np.arange(100, 100 + n_items, dtype=np.int64),
                     factors=rng.normal(size=(n_items, k)).astype(np.float32),
                     bias=rng.normal(size=n_items).astype(np.float32),
                     candidate=np.ones(n_items, dtype=bool))


def _users(n=25, k=5, seed=1, seen=None):
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"user_id": np.arange(1, n + 1), "features": list(rng.normal(size=(n, k)).astype(np.float32)),
                         "bias": rng.normal(size=n).astype(np.float32), "seen": seen or [None] * n})


def _reference(users, table, n, seen_lists):
    raw = (np.stack(users["features"]).astype(np.float64) @ table.factors.T.astype(np.float64)
           + users["bias"].to_numpy()[:, None] + table.bias[None, :])
    scores = sigmoid_range(torch.from_numpy(raw), Y_RANGE).numpy()
    out = {}
    for row, (uid, seen) in enumerate(zip(users["user_id"], seen_lists)):
        allowed = [i for i in range(len(table.ids)) if table.candidate[i] and not (seen and i in seen)]
        best = sorted(allowed, key=lambda i: (-scores[row, i], i))[:n]
        out[uid] = [int(table.ids[i]) for i in best]
    return out


def test_matches_brute_force_with_exclusions():
    table = _table()
    table.candidate[[3, 7]] = False
    seen = [[0, 1, 2]] + [None] * 23 + [list(range(38))]  # the last user has seen nearly everything
    users = _users(seen=seen)
    got = BlockScorer(table, np.arange(40), np.zeros(40, np.float32), top_n=6, head=_head(), block_size=7).score_frame(users)
    want = _reference(users, table, 6, seen)
    assert {u: g["item_id"].tolist() for u, g in got.groupby("user_id")} == want
    assert got.groupby("user_id")["rank"].apply(list).iloc[0] == [1, 2, 3, 4, 5, 6]
    assert got[got.user_id == 25]["item_id"].tolist() == [139, 138]  # only items 38 and 39 remain
    assert not got["fallback"].any()
    assert (got.groupby("user_id")["score"].apply(lambda s: s.is_monotonic_decreasing)).all()


def test_ties_go_to_the_lower_index_every_time():
    scores = torch.tensor([[1.0, 3.0, 3.0, 3.0, 0.5, 3.0], [2.0, 2.0, 2.0, 2.0, 2.0, 2.0]])
    for _ in range(3):
        idx, vals = top_n(scores.clone(), 3)
        assert idx.tolist() == [[1, 2, 3], [0, 1, 2]]
        assert vals.tolist() == [[3.0, 3.0, 3.0], [2.0, 2.0, 2.0]]


def test_masked_items_never_returned():
    scores = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    candidate = torch.tensor([True, True, True, True, True, False])
    mask_excluded(scores, np.array([0, 0]), np.array([4, 3]), candidate)
    idx, _ = top_n(scores, 4)
    assert idx.tolist() == [[2, 1, 0, -1], [4, 3, 2, 1]]


def test_cold_users_get_fallback_minus_seen():
    table = _table(n_items=6)
    order = np.array([5, 4, 3, 2, 1, 0])
    score = np.linspace(1, 2, 6).astype(np.float32)
    users = pd.DataFrame({"user_id": [7, 8], "features": [None, None], "bias": [None, None],
                          "seen": [np.array([4]), None]})
    got = BlockScorer(table, order, score, top_n=3, head=_head()).score_frame(users)
    assert got[got.user_id == 7]["item_id"].tolist() == [105, 103, 102]
    assert got[got.user_id == 8]["item_id"].tolist() == [105, 104, 103]
    assert got["fallback"].all()
    np.testing.assert_allclose(got[got.user_id == 8]["score"], score[[5, 4, 3]])


def test_embedding_net_scores_every_pair_like_the_model():
    torch.manual_seed(0)
    net = ModelArgs("embedding_net", 5, 9, 4, [0.5, 5.0], [6], [0.3]).build().eval()
    table = ItemTable(ids=np.arange(9), factors=net.i_weight.weight.detach().numpy().copy(),
                      bias=np.zeros(9, np.float32), candidate=np.ones(9, bool))
    head = head_module(net.args, net.head_state())
    head.pairs_per_pass = 20  # several passes over the pairs
    users = pd.DataFrame({"user_id": range(5), "features": list(net.u_weight.weight.detach().numpy()),
                          "bias": [0.0] * 5, "seen": [None] * 5})
    got = BlockScorer(table, np.arange(9), np.zeros(9, np.float32), top_n=9, head=head).score_frame(users)
    with torch.no_grad():
        full = net(torch.arange(5).repeat_interleave(9), torch.arange(9).repeat(5)).view(5, 9).numpy()
    for uid, recs in got.groupby("user_id"):
        np.testing.assert_allclose(recs["score"], np.sort(full[uid])[::-1], rtol=1e-5)


@pytest.mark.parametrize("levels", [None, 7, 2])
def test_grouped_selection_equals_full_top_n(levels):
    """Same indices and values as top_n, with real-valued scores and with heavy ties (few distinct values)."""
    gen = torch.Generator().manual_seed(levels or 0)
    scores = torch.randn(300, 960, generator=gen)
    if levels:
        scores = torch.floor(scores * levels / 3)  # many exact ties, also across groups
    scores[5, :] = -torch.inf                          # everything excluded
    scores[6, 100:] = -torch.inf                       # fewer candidates than n in one row
    scores[7, :950] = -torch.inf
    scores[8, ::2] = -torch.inf
    for n in (1, 10, 25):
        want = top_n(scores.clone(), n)
        got = top_n_grouped(scores.clone(), n, group_width(960, n))
        np.testing.assert_array_equal(got[0], want[0])
        np.testing.assert_array_equal(got[1], want[1])


def test_grouped_selection_can_be_checked_against_a_wrong_answer():
    # The comparison above is meaningful: dropping the boundary-tie redo changes the result here.
    scores = torch.zeros(1, 256)
    scores[0, 200] = 1.0  # one clear winner, then ties at 0 everywhere: the lowest indices must follow
    idx, _ = top_n_grouped(scores, 3, 8)
    assert idx.tolist() == [[200, 0, 1]]


def test_block_scorer_grouped_path_matches_reference():
    # 3003 items: not a whole number of groups, so padding items are in play; biases, a rating range,
    # non-candidates and seen items all go through the one matrix product's offset column.
    rng = np.random.default_rng(5)
    n_items = 3003
    assert n_items % group_width(n_items, 10)
    table = ItemTable(ids=np.arange(n_items) + 1000, factors=rng.normal(size=(n_items, 6)).astype(np.float32),
                      bias=rng.normal(size=n_items).astype(np.float32), candidate=rng.random(n_items) > 0.1)
    seen = [rng.choice(n_items, size=rng.integers(0, 50), replace=False).astype(np.int32) for _ in range(40)]
    users = pd.DataFrame({"user_id": np.arange(40, dtype=np.int32),
                          "features": list(rng.normal(size=(40, 6)).astype(np.float32)),
                          "bias": rng.normal(size=40).astype(np.float32), "seen": seen})
    scorer = BlockScorer(table, np.arange(0), np.zeros(0, np.float32), top_n=10, head=_head(), block_size=16)
    got = scorer.score_frame(users)
    raw = (users["bias"].to_numpy()[:, None] + np.stack(users["features"]).astype(np.float64) @ table.factors.T
           + table.bias)
    raw[:, ~table.candidate] = -np.inf
    for u, s in enumerate(seen):
        raw[u, s] = -np.inf
    assert got["user_id"].nunique() == 40
    for u, rows in got.groupby("user_id"):
        rows = rows.sort_values("rank")
        want = np.lexsort((np.arange(n_items), -raw[u]))[:10]
        assert rows["item_id"].tolist() == (want + 1000).tolist()
        np.testing.assert_allclose(rows["score"], sigmoid_range(torch.from_numpy(raw[u, want]), (0.0, 5.5)),
                                   rtol=1e-5)


def test_block_scorer_caches_stay_out_of_the_broadcast():
    import pickle
    scorer = BlockScorer(_table(n_items=40), np.arange(40), np.zeros(40, np.float32), top_n=3, head=_head())
    before = len(pickle.dumps(scorer))
    first = scorer.score_frame(_users())
    assert scorer._buffer is not None and scorer._padded is not None  # built by scoring
    assert len(pickle.dumps(scorer)) == before
    again = pickle.loads(pickle.dumps(scorer)).score_frame(_users())
    pd.testing.assert_frame_equal(first, again)

"""The sampled softmax terms against their composed formulas: values, gradients, each row's own drawn item left out."""
import pytest
import torch

from cfmodel.model import ModelArgs
from cfmodel.train.negatives import NegativeSampler, RatedPairs
from cfmodel.train.objectives import make_objective


def _random_case(kind: str, objective: str, seed: int, sampler_seed: int, rank_factors=None):
    """(model with N(0, 1) weights, 64 users, their items, sampler, objective drawing 16 items) over 30 users
    and 40 items: small enough that some rows meet their own item among the drawn."""
    torch.manual_seed(seed)
    model = ModelArgs(kind, 30, 40, 6, [0.0, 5.5], [10], [0.5], 0.05, rank_factors=rank_factors).build()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_()
    users, items = torch.randint(0, 30, (64,)), torch.randint(0, 40, (64,))
    sampler = NegativeSampler(RatedPairs(users, items, 40), "popularity", exclude_rated=False, seed=sampler_seed)
    return model, users, items, sampler, make_objective(objective, sampler, 1, 16, None, 1.0, "softmax")


@pytest.mark.parametrize("kind", ["dot_bias", "embedding_net"])
def test_count_confidence_weighs_a_pair_as_its_events_repeated(kind):
    """``confidence: count`` on a pair seen c times is the unweighted loss of the pair repeated c times (the
    same drawn items), in value and gradients, for the fused (bilinear) and the composed softmax; ``log``
    differs from both. Mutant caught: a weight that is ignored (the three losses equal), or not normalised."""
    model, users, items, sampler, _ = _random_case(kind, "softmax", seed=4, sampler_seed=7)
    model.eval()
    counts = torch.randint(1, 5, (64,)).float()
    weights = [p for p in model.parameters() if p.requires_grad]

    def loss(confidence, u, i, r):
        sampler.reseed(7)
        value, _ = make_objective("softmax", sampler, 1, 16, None, 1.0, "softmax", confidence).loss(model, u, i, r)
        return value.detach(), torch.autograd.grad(value, weights, allow_unused=True)

    reps = counts.long()
    weighted, weighted_grads = loss("count", users, items, counts)
    repeated, repeated_grads = loss("none", users.repeat_interleave(reps), items.repeat_interleave(reps),
                                    torch.ones(int(reps.sum())))
    logged, _ = loss("log", users, items, counts)
    plain, _ = loss("none", users, items, counts)
    assert torch.allclose(weighted, repeated, atol=1e-5)
    for g, w in zip(weighted_grads, repeated_grads):
        assert (g is None) == (w is None) and (g is None or torch.allclose(g, w, atol=1e-5))
    assert abs(float(weighted - plain)) > 1e-3 and abs(float(logged - plain)) > 1e-4
    assert abs(float(logged - weighted)) > 1e-4


def test_bpr_confidence_is_a_weighted_mean_of_the_pairs_terms():
    """``bpr`` with ``confidence: count`` on equal counts is the plain loss (a weighted mean, normalised); on
    unequal counts it is not. Mutant caught: weights left unnormalised (a loss 3x the plain one)."""
    model, users, items, sampler, _ = _random_case("dot_bias", "bpr", seed=5, sampler_seed=9)

    def loss(confidence, counts):
        sampler.reseed(9)
        value, _ = make_objective("bpr", sampler, 3, 16, None, 1.0, "softmax", confidence).loss(
            model, users, items, counts)
        return float(value.detach())

    plain = loss("none", torch.ones(64))
    assert loss("count", torch.full((64,), 3.0)) == pytest.approx(plain, rel=1e-5)
    assert loss("count", torch.randint(1, 9, (64,)).float()) != pytest.approx(plain, rel=1e-3)


def test_hybrid_softmax_term_equals_the_whole_row_formula_in_value_and_head_gradients():
    """The hybrid's term skips the backward pass through the (detached) rating columns: the same loss and the
    same gradients of the head as [rating | head] rows scored whole."""
    import torch.nn.functional as F

    model, users, items, sampler, objective = _random_case("dot_bias", "hybrid", seed=0, sampler_seed=3, rank_factors=3)
    (u, _), (i, _) = model.rows("user", users), model.rows("item", items)
    head = [model.u_rank.weight, model.i_rank.weight, model.r_bias.weight]
    got = objective.ranking.term(model, users, items, (u.detach(), i.detach()), None)
    got_grads = torch.autograd.grad(got, head)
    sampler.reseed(3)
    drawn, log_q = sampler.draw(16), sampler.log_q
    uu, _ = model.rank_rows("user", users, factors=u.detach())
    ii, ib = model.rank_rows("item", items, factors=i.detach())
    dd, db = model.rank_rows("item", drawn, factors=model.i_weight(drawn).detach())
    pos = (uu * ii).sum(1) + ib - log_q[items]
    others = (uu @ dd.T + db - log_q[drawn]).masked_fill(drawn[None, :] == items[:, None], float("-inf"))
    want = F.cross_entropy(torch.cat([pos[:, None], others], dim=1), torch.zeros(64, dtype=torch.long))
    want_grads = torch.autograd.grad(want, head)
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert torch.allclose(g, w, atol=1e-5)


@pytest.mark.parametrize("kind", ["dot", "dot_bias"])
def test_softmax_term_of_a_bilinear_model_equals_the_composed_formula(kind):
    """The fused sampled softmax (one autograd function over the (rows, drawn) block) gives the loss and
    every gradient of log-softmax over [positive | drawn], log-q corrected, the row's own item masked."""
    import torch.nn.functional as F

    model, users, items, sampler, objective = _random_case(kind, "softmax", seed=1, sampler_seed=5)
    weights = [p for p in model.parameters() if p.requires_grad]
    got = objective.term(model, users, items, None, None)
    got_grads = torch.autograd.grad(got, weights, allow_unused=True)
    sampler.reseed(5)
    drawn, log_q = sampler.draw(16), sampler.log_q
    assert bool((drawn[None, :] == items[:, None]).any())  # some rows meet their own item among the drawn
    (u, _), (i, ib), (d, db) = model.rows("user", users), model.rows("item", items), model.rows("item", drawn)
    pos = (u * i).sum(1) + (0 if ib is None else ib) - log_q[items]
    others = (u @ d.T + (0 if db is None else db) - log_q[drawn]).masked_fill(drawn[None, :] == items[:, None],
                                                                              float("-inf"))
    want = F.cross_entropy(torch.cat([pos[:, None], others], dim=1), torch.zeros(64, dtype=torch.long))
    want_grads = torch.autograd.grad(want, weights, allow_unused=True)
    assert torch.allclose(got, want, atol=1e-5)
    for g, w in zip(got_grads, want_grads):
        assert (g is None) == (w is None) and (g is None or torch.allclose(g, w, atol=1e-5))


def test_softmax_term_of_a_network_leaves_out_each_rows_own_drawn_item():
    """The composed sampled softmax of a model that is not bilinear: log-softmax over [positive | drawn],
    log-q corrected, with each row's own item among the drawn left out (compared with a whole-block mask)."""
    import torch.nn.functional as F

    model, users, items, sampler, objective = _random_case("embedding_net", "softmax", seed=2, sampler_seed=5)
    model.eval()  # no dropout: the two passes see the same network
    got = objective.term(model, users, items, None, None)
    sampler.reseed(5)
    drawn, log_q = sampler.draw(16), sampler.log_q
    assert bool((drawn[None, :] == items[:, None]).any())  # some rows meet their own item among the drawn
    (u, _), (i, ib), (d, db) = model.rows("user", users), model.rows("item", items), model.rows("item", drawn)
    pos = model.raw_pairs(u, i, None, ib).float() - log_q[items]
    others = (model.raw_block(u, d, None, db).float() - log_q[drawn]).masked_fill(
        drawn[None, :] == items[:, None], float("-inf"))
    want = F.cross_entropy(torch.cat([pos[:, None], others], dim=1), torch.zeros(64, dtype=torch.long))
    unmasked = F.cross_entropy(torch.cat([pos[:, None], model.raw_block(u, d, None, db).float() - log_q[drawn]],
                                         dim=1), torch.zeros(64, dtype=torch.long))
    assert torch.allclose(got, want, atol=1e-5) and not torch.allclose(got, unmasked, atol=1e-5)


def test_own_item_hits_are_every_place_a_row_meets_its_item_among_the_drawn_even_drawn_twice():
    """The CPU's sparse hits are exactly the whole-block comparison's (the GPU's mask), duplicates included."""
    from cfmodel.train.block_softmax import own_item_hits

    items, drawn = torch.tensor([3, 7, 3, 0, 9]), torch.tensor([3, 5, 3, 9, 1, 3])
    rows, cols = own_item_hits(items, drawn, 10)
    assert sorted(zip(rows.tolist(), cols.tolist())) == [(0, 0), (0, 2), (0, 5), (2, 0), (2, 2), (2, 5), (4, 3)]
    mask = items[:, None] == drawn[None, :]
    assert torch.equal(torch.zeros_like(mask).index_put_((rows, cols), torch.tensor(True)), mask)
    none_rows, _ = own_item_hits(torch.tensor([2, 4]), drawn, 10)
    assert len(none_rows) == 0

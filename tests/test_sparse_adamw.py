"""SparseAdamW: dense AdamW's update on touched rows, the exact decay on untouched ones, resumable."""
import copy
import math

import pytest
import torch
from torch import nn

from cfmodel.train.sparse_adamw import SparseAdamW


def _tables(seed=0, rows=6, dim=3):
    torch.manual_seed(seed)
    dense = nn.Embedding(rows, dim)
    sparse = nn.Embedding(rows, dim, sparse=True)
    sparse.weight.data.copy_(dense.weight.data)
    return dense, sparse


def _step(table, opt, idx, target):
    opt.zero_grad()
    ((table(idx) - target) ** 2).sum().backward()
    opt.step()


def test_rows_touched_every_step_follow_torch_adamw_under_a_schedule():
    dense, sparse = _tables()
    ref = torch.optim.AdamW(dense.parameters(), lr=0.05, weight_decay=0.3)
    ours = SparseAdamW(sparse.parameters(), lr=0.05, weight_decay=0.3)
    scheds = [torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.05, total_steps=20) for o in (ref, ours)]
    idx = torch.tensor([0, 1, 2, 3, 4, 5, 2])  # every row, one twice
    target = torch.randn(len(idx), 3)
    for _ in range(20):
        _step(dense, ref, idx, target)
        _step(sparse, ours, idx, target)
        for s in scheds:
            s.step()
    assert sparse.weight.grad.is_sparse
    assert torch.allclose(sparse.weight, dense.weight, atol=1e-6)


def test_untouched_rows_owe_the_exact_decay_of_every_skipped_step():
    _, sparse = _tables()
    before = sparse.weight.detach().clone()
    opt = SparseAdamW(sparse.parameters(), lr=0.1, weight_decay=0.5)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0 / (1 + step))
    lrs = []
    for _ in range(7):
        lrs.append(opt.param_groups[0]["lr"])
        _step(sparse, opt, torch.tensor([0, 1]), torch.zeros(2, 3))
        sched.step()
    # Rows 2..5 were never touched: unchanged until settled, then shrunk by every step's factor.
    assert torch.equal(sparse.weight[2:], before[2:])
    opt.settle()
    factor = math.prod(1 - lr * 0.5 for lr in lrs)
    assert torch.allclose(sparse.weight[2:], before[2:] * factor, rtol=1e-6)
    opt.settle()  # nothing more owed
    assert torch.allclose(sparse.weight[2:], before[2:] * factor, rtol=1e-6)


def test_a_row_touched_late_pays_its_owed_decay_before_its_update():
    dense, sparse = _tables()
    ours = SparseAdamW(sparse.parameters(), lr=0.05, weight_decay=0.4)
    for _ in range(3):
        _step(sparse, ours, torch.tensor([0]), torch.zeros(1, 3))
    row = sparse.weight[5].detach().clone()
    _step(sparse, ours, torch.tensor([5]), torch.zeros(1, 3))
    # Four steps of decay, then the row's first moments, bias-corrected by the optimiser's step count (4).
    expected = row * (1 - 0.05 * 0.4) ** 4
    size = 0.05 * (0.1 / (1 - 0.9 ** 4)) / math.sqrt(0.001 / (1 - 0.999 ** 4))
    expected = expected - size * torch.sign(expected)
    assert torch.allclose(sparse.weight[5], expected, atol=1e-5)


def test_state_dict_round_trip_continues_identically():
    _, a = _tables(1)
    _, b = _tables(1)
    opt_a = SparseAdamW(a.parameters(), lr=0.05, weight_decay=0.2)
    idx = [torch.tensor([0, 1]), torch.tensor([2]), torch.tensor([1, 5])]
    for i in idx:
        _step(a, opt_a, i, torch.ones(len(i), 3))
    b.weight.data.copy_(a.weight.data)
    opt_b = SparseAdamW(b.parameters(), lr=0.05, weight_decay=0.2)
    opt_b.load_state_dict(copy.deepcopy(opt_a.state_dict()))  # as torch.save would
    assert opt_b.state[b.weight]["settled"].dtype == torch.float64
    for i in idx:
        _step(a, opt_a, i, torch.ones(len(i), 3))
        _step(b, opt_b, i, torch.ones(len(i), 3))
    opt_a.settle(), opt_b.settle()
    assert torch.equal(a.weight, b.weight)


def test_dense_gradients_and_coupled_l2_follow_torch_adam():
    torch.manual_seed(0)
    layer, twin = nn.Linear(4, 2), nn.Linear(4, 2)
    twin.load_state_dict(layer.state_dict())
    ref = torch.optim.Adam(layer.parameters(), lr=0.01, weight_decay=0.1)
    ours = SparseAdamW(twin.parameters(), lr=0.01, weight_decay=0.1, l2=True)
    x = torch.randn(8, 4)
    for _ in range(5):
        for net, opt in ((layer, ref), (twin, ours)):
            opt.zero_grad()
            net(x).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(twin.weight, layer.weight, atol=1e-6)


def test_a_decay_that_would_flip_signs_is_refused():
    _, sparse = _tables()
    opt = SparseAdamW(sparse.parameters(), lr=1.0, weight_decay=1.5)
    with pytest.raises(ValueError, match="flip"):
        _step(sparse, opt, torch.tensor([0]), torch.zeros(1, 3))


def _hybrid_run(merge: bool, steps: int, state=None, zero_step=None):
    """A hybrid model trained ``steps`` sparse steps by make_optimizer's SparseAdamW (sharing a side's rows
    or not), from the same weights and draws; optionally loading an optimiser ``state`` first, and with step
    ``zero_step``'s loss made of dense zero gradients (a batch without positives)."""
    from cfmodel.config import TrainConfig
    from cfmodel.model.nets import ModelArgs
    from cfmodel.train.negatives import NegativeSampler, RatedPairs
    from cfmodel.train.objectives import _zero, make_objective
    from cfmodel.train.optim import make_optimizer, make_scheduler

    torch.manual_seed(3)
    model = ModelArgs("dot_bias", 30, 40, 6, rank_factors=3).build()
    users, items = torch.randint(0, 30, (256,)), torch.randint(0, 40, (256,))
    ratings = torch.rand(256) * 5
    cfg = TrainConfig(objective="hybrid", row_updates="sparse", lr=0.05, bias_wd=0.01, rank_wd=0.2, epochs=1)
    opt = make_optimizer(model, cfg, merge_rows=merge)
    sched, _ = make_scheduler(opt, cfg, 20)
    if state is not None:
        opt.load_state_dict(copy.deepcopy(state))
    sampler = NegativeSampler(RatedPairs(users, items, 40), "popularity", exclude_rated=False, seed=1)
    objective = make_objective("hybrid", sampler, 1, 8, None, 1.0, "softmax")
    for step in range(steps):
        rows = slice(32 * (step % 8), 32 * (step % 8 + 1))
        loss = _zero(model) if step == zero_step else objective.loss(model, users[rows], items[rows], ratings[rows])[0]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    return model, opt


def test_a_sides_shared_rows_update_exactly_as_table_by_table():
    merged, opt = _hybrid_run(True, 12, zero_step=5)
    plain, plain_opt = _hybrid_run(False, 12, zero_step=5)
    # The user side (factors, bias, head), the item side (factors, bias) and the item head share storages...
    storage = {name: p.untyped_storage().data_ptr() for name, p in merged.named_parameters()}
    assert storage["u_weight.weight"] == storage["u_bias.weight"] == storage["u_rank.weight"]
    assert storage["i_weight.weight"] == storage["i_bias.weight"] != storage["i_rank.weight"] == storage["r_bias.weight"]
    assert len(opt.row_sets) == 3 and opt.set_ok == [True] * 3 and not plain_opt.row_sets
    # ...and every weight and moment is the table-by-table update's (a dense step included), to float
    # rounding: the fused kernel's vector lanes split a wider row differently (measured 2e-8 at most).
    opt.settle(), plain_opt.settle()
    for (name, a), (_, b) in zip(merged.state_dict().items(), plain.state_dict().items()):
        assert torch.allclose(a, b, rtol=0, atol=1e-6) and (a - b).abs().max() < 1e-3 * a.abs().max(), name
    ours, theirs = opt.state_dict()["state"], plain_opt.state_dict()["state"]
    assert sorted(ours) == sorted(theirs)
    for a, b in ((ours[key], theirs[key]) for key in ours):
        assert torch.equal(a["step"], b["step"])
        assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in ("exp_avg", "exp_avg_sq"))


def test_shared_rows_resume_from_a_saved_state():
    _, first = _hybrid_run(True, 4)
    saved = first.state_dict()
    resumed, opt = _hybrid_run(True, 3, state=saved)
    rs = opt.row_sets[0]
    p, start, stop = rs.members[0]
    # The loaded moments went back into the set's storage, which the next steps update.
    assert opt.state[p]["exp_avg"].untyped_storage().data_ptr() == rs.exp_avg.untyped_storage().data_ptr()
    _, plain = _hybrid_run(False, 3, state=saved)
    ours, theirs = opt.state_dict()["state"], plain.state_dict()["state"]
    for a, b in ((ours[key], theirs[key]) for key in theirs):
        assert all(torch.allclose(a[k], b[k], rtol=1e-5, atol=1e-9) for k in ("exp_avg", "exp_avg_sq"))
        assert a["exp_avg"].abs().max() > 0


def test_shared_rows_whose_tables_step_apart_go_table_by_table():
    from cfmodel.train.sparse_adamw import share_rows

    def run(shared: bool):
        (_, a), (_, b) = _tables(4, dim=3), _tables(5, dim=1)
        sets = [share_rows([a, b])] if shared else []
        opt = SparseAdamW([{"params": [a.weight], "weight_decay": 0.3}, {"params": [b.weight]}], lr=0.05,
                          row_sets=sets)
        for step in range(6):
            idx = torch.tensor([step % 6, 2])
            opt.zero_grad()
            # Step 3 touches the first table only: from then on the set steps table by table.
            loss = (a(idx) - 1).pow(2).sum() + (0 if step == 3 else (b(idx) + 1).pow(2).sum())
            loss.backward()
            opt.step()
        opt.settle()
        return a.weight.detach().clone(), b.weight.detach().clone(), opt

    a, b, opt = run(True)
    a_ref, b_ref, _ = run(False)
    assert opt.set_ok == [False]
    assert torch.allclose(a, a_ref, rtol=0, atol=1e-6) and torch.allclose(b, b_ref, rtol=0, atol=1e-6)
    assert not torch.equal(a, _tables(4, dim=3)[1].weight)

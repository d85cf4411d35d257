"""The networks and the trained-model object: maths in one place, save/load, version, scoring."""
import numpy as np
import pytest
import torch

from cfmodel.errors import ConfigError, InputError
from cfmodel.model import ModelArgs, TrainedModel, dot_head, head_module, sigmoid_range
from cfmodel.model.nets import DotProduct, DotProductBias, EmbeddingNet


def _batch(n=32, n_users=10, n_items=7):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, n_users, (n,), generator=g), torch.randint(0, n_items, (n,), generator=g)


def _randomised(name, n_users=10, n_items=7, seed=0, **kw):
    torch.manual_seed(seed)
    module = ModelArgs(name, n_users, n_items, 4, y_range=[1.0, 5.0], hidden=[8], dropouts=[0.0], **kw).build()
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0, 0.5)
    return module.eval()


def test_dot_product_is_the_dot_product():
    m = ModelArgs("dot", 10, 7, 3).build()
    u, i = _batch()
    expected = (m.u_weight.weight[u] * m.i_weight.weight[i]).sum(1)
    assert isinstance(m, DotProduct) and m(u, i).shape == (32,)
    assert torch.allclose(m(u, i), expected)


@pytest.mark.parametrize("args", [ModelArgs("dot_bias", 10, 7, 4, [1.0, 5.0]),
                                  ModelArgs("embedding_net", 10, 7, 4, [1.0, 5.0], [8, 4], [0.1, 0.1])])
def test_output_shape_and_range(args):
    torch.manual_seed(0)  # the weights below must not depend on which tests ran before
    model = args.build().eval()
    u, i = _batch()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 5)  # large weights push outputs to the ends of the range, never past them
        out = model(u, i)
        assert out.shape == (32,)
        assert float(out.min()) >= 1.0 and float(out.max()) <= 5.0
        for p in model.parameters():
            p.normal_(0, 0.5)
        out = model(u, i)
        assert float(out.max() - out.min()) > 0.2  # and the output depends on the pair


def test_bias_model_uses_the_biases():
    m = ModelArgs("dot_bias", 10, 7, 4, [0.0, 5.5]).build()
    u, i = _batch()
    with torch.no_grad():
        m.u_weight.weight.zero_()
        m.i_bias.weight.fill_(2.0)
    assert isinstance(m, DotProductBias)
    assert torch.allclose(m(u, i), sigmoid_range(2.0 + m.u_bias.weight[u].squeeze(1), (0.0, 5.5)))


def test_bad_arguments_are_config_errors():
    assert ModelArgs("embedding_net", 3, 4, 5, hidden=[6], dropouts=[0.2]).build().layers[1].in_features == 10
    with pytest.raises(ConfigError, match="unknown model"):
        ModelArgs("svd", 3, 4, 5)
    with pytest.raises(ConfigError, match="one dropout per hidden layer"):
        ModelArgs("embedding_net", 3, 4, 5, hidden=[8, 4], dropouts=[0.1])


@pytest.mark.parametrize("name", ["dot", "dot_bias", "embedding_net"])
def test_block_scores_equal_pair_scores_and_the_head_equals_the_module(name):
    model = _randomised(name)
    u_idx, i_idx = torch.arange(10), torch.arange(7)
    (u, ub), (i, ib) = model.rows("user", u_idx), model.rows("item", i_idx)
    with torch.no_grad():
        block = model.score_block(u, i, ub, ib)
        pairs = model(u_idx.repeat_interleave(7), i_idx.repeat(10)).view(10, 7)
        head = head_module(model.args, model.head_state())
        from_head = head.score_block(u, i, ub, ib)
    torch.testing.assert_close(block, pairs)
    torch.testing.assert_close(from_head, pairs)
    assert sum(p.numel() for p in head.parameters()) == sum(p.numel() for p in model.head_state().values())


def test_decay_groups_and_tables_come_from_the_model():
    model = _randomised("dot_bias")
    assert [(side, is_bias) for side, is_bias, _ in model.embeddings()] == [
        ("user", False), ("item", False), ("user", True), ("item", True)]
    assert [p.shape for p in model.bias_parameters()] == [(10, 1), (7, 1)]
    net = _randomised("embedding_net")
    assert net.bias_parameters() == [] and set(net.head_state()) == {"layers.1.weight", "layers.1.bias",
                                                                      "layers.4.weight", "layers.4.bias"}


@pytest.mark.parametrize("name", ["dot", "dot_bias", "embedding_net"])
def test_trained_model_round_trip_predict_and_version(tmp_path, name):
    module = _randomised(name)
    trained = TrainedModel(module.args, module, np.arange(10) + 100, np.arange(7) + 500, {"valid_mse": 0.5})
    trained.save(str(tmp_path))
    loaded = TrainedModel.load(str(tmp_path))
    assert loaded.args == trained.args and loaded.extra["valid_mse"] == 0.5
    assert loaded.item_ids.tolist() == list(range(500, 507))
    u, i = np.array([0, 3, 9]), np.array([6, 1, 0])
    with torch.no_grad():
        want = module(torch.from_numpy(u), torch.from_numpy(i)).numpy()
    np.testing.assert_array_equal(loaded.predict(u, i), want)
    np.testing.assert_allclose(loaded.score_block([3], [1, 2])[0, 0], want[1], rtol=1e-6)
    # The version is a digest of the arguments and weights: equal for a re-saved copy, new for new weights.
    assert loaded.version == trained.version and len(trained.version) == 12
    other = _randomised(name, seed=1)
    assert TrainedModel(other.args, other, trained.user_ids, trained.item_ids).version != trained.version


def test_recommend_excludes_and_orders_like_the_scores():
    """Also: the scorer's one thread is its own while it scores (mutant caught: a scorer that leaves the
    caller's process on one torch thread)."""
    module = _randomised("dot_bias")
    trained = TrainedModel(module.args, module, np.arange(10) + 100, np.arange(7) + 500)
    torch.set_num_threads(2)  # the conftest fixture puts the process's count back after the test
    lists = trained.recommend([2, 5], 3, exclude={2: [0, 1]})
    assert torch.get_num_threads() == 2
    assert lists["user_id"].tolist() == [102] * 3 + [105] * 3 and lists["rank"].tolist() == [1, 2, 3] * 2
    scores = trained.score_block([2], np.arange(7))[0]
    scores[[0, 1]] = -np.inf
    assert lists[lists.user_id == 102]["item_id"].tolist() == (500 + np.argsort(-scores)[:3]).tolist()
    np.testing.assert_allclose(lists[lists.user_id == 102]["score"], np.sort(scores)[::-1][:3], rtol=1e-5)


def test_dot_head_adds_biases_only_when_given():
    head = dot_head()
    u, i = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 4.0]])
    assert float(head.score_pairs(u, i)) == 11.0
    assert float(head.score_pairs(u, i, torch.tensor([1.0]), torch.tensor([0.5]))) == 12.5


def test_an_old_model_file_is_a_clear_error(tmp_path):
    torch.save({"state_dict": {}, "model": {"name": "dot"}}, tmp_path / "model.pt")
    with pytest.raises(InputError, match="no model_args"):
        TrainedModel.load(str(tmp_path))
    with pytest.raises(InputError, match="model not found"):
        TrainedModel.load(str(tmp_path / "nowhere"))
    assert EmbeddingNet.pairs_per_pass > 0

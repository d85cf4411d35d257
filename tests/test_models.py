import pytest
import torch

from cfmodel.models import DotProduct, DotProductBias, EmbeddingNet, build_model, sigmoid_range


def _batch(n=32, n_users=10, n_items=7):
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, n_users, (n,), generator=g), torch.randint(0, n_items, (n,), generator=g)


def test_dot_product_is_the_dot_product():
    m = DotProduct(10, 7, n_factors=3)
    u, i = _batch()
    expected = (m.u_weight.weight[u] * m.i_weight.weight[i]).sum(1)
    assert m(u, i).shape == (32,)
    assert torch.allclose(m(u, i), expected)


@pytest.mark.parametrize("model", [DotProductBias(10, 7, 4, (1.0, 5.0)),
                                   EmbeddingNet(10, 7, 4, hidden=(8, 4), dropouts=(0.1, 0.1), y_range=(1.0, 5.0))])
def test_output_shape_and_range(model):
    torch.manual_seed(0)  # the weights below must not depend on which tests ran before
    model.eval()
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
    m = DotProductBias(10, 7, 4, (0.0, 5.5))
    u, i = _batch()
    with torch.no_grad():
        m.u_weight.weight.zero_()
        m.i_bias.weight.fill_(2.0)
    assert torch.allclose(m(u, i), sigmoid_range(2.0 + m.u_bias.weight[u].squeeze(1), (0.0, 5.5)))


def test_build_model_and_bad_arguments():
    assert isinstance(build_model("dot_bias", 3, 4, 5, (0, 5.5)), DotProductBias)
    assert build_model("embedding_net", 3, 4, 5, (0, 5.5), [6], [0.2]).layers[1].in_features == 10
    with pytest.raises(ValueError, match="unknown model"):
        build_model("svd", 3, 4, 5, (0, 5.5))
    with pytest.raises(ValueError, match="one dropout per hidden layer"):
        EmbeddingNet(3, 4, 5, hidden=(8, 4), dropouts=(0.1,))

"""Pair coordinates and input parsing."""

import numpy as np
import pytest

from kernel_eft.core.pairs import (
    four_index_to_pairs,
    from_pairs,
    n_pairs,
    pair_indices,
    pairs_to_four_index,
    to_pairs,
    wishart_v4,
)
from kernel_eft.validation import InputError, format_kin, parse_kin


def test_pair_order_is_row_major_upper_triangle():
    a, b = pair_indices(3)
    assert list(zip(a.tolist(), b.tolist())) == [(0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2)]
    assert n_pairs(8) == 36


def test_round_trips():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(4, 3, 3))
    X = X + X.transpose(0, 2, 1)
    np.testing.assert_array_equal(from_pairs(to_pairs(X)), X)
    V = rng.normal(size=(6, 6))
    np.testing.assert_array_equal(four_index_to_pairs(pairs_to_four_index(V, 3)), V)


def test_wishart_form_is_the_covariance_of_gaussian_outer_products():
    """n Cov(G) for G = h h^T/n, h_i ~ N(0,K): an exact identity checked by sampling (5 sigma)."""
    rng = np.random.default_rng(1)
    K = np.array([[1.0, 0.3], [0.3, 2.0]])
    h = rng.multivariate_normal(np.zeros(2), K, size=400000)
    outer = np.einsum("sa,sb->sab", h, h).reshape(-1, 4)
    cov = np.cov(outer.T).reshape(2, 2, 2, 2)
    # standard error of a sample covariance of products, estimated from fourth moments
    centred = outer - outer.mean(axis=0)
    prod = np.einsum("si,sj->sij", centred, centred).reshape(len(h), 16)
    se = (prod.std(axis=0) / np.sqrt(len(h))).reshape(2, 2, 2, 2)
    assert np.all(np.abs(cov - wishart_v4(K)) < 5 * se)


@pytest.mark.parametrize("text", ["1,0.6;0.6,1", "2.5", " 1 , 0 ; 0 , 1 "])
def test_parse_kin_accepts_and_round_trips(text):
    K = parse_kin(text)
    np.testing.assert_array_equal(parse_kin(format_kin(K)), K)


@pytest.mark.parametrize("text, message", [("", "empty"), ("1,2;2,1", "positive semi-definite"),
                                           ("1,0.5;0.4,1", "symmetric"), ("1,0;0", "square"),
                                           ("0,0;0,1", "positive norm"), ("x", "parse"), ("inf", "K_in[0,0] is inf"),
                                           ("1,nan;nan,1", "K_in[0,1] is nan")])
def test_parse_kin_rejects(text, message):
    with pytest.raises(InputError) as err:
        parse_kin(text)
    assert err.value.field == "--kin" and message in str(err.value)

"""Backends: AUC floors on separable synthetic embeddings with two domains, and hand-checked small cases
(the contract every backend keeps is in test_contracts.py)."""

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from asd.backends import available, build_backend
from asd.backends.knn import smote

EMBEDDING_BACKENDS = [b for b in available() if b != "recon"]


def _separable(seed=0, d=16):
    """Normal clips near two domain-specific directions; anomalies in directions no normal clip takes."""
    rng = np.random.default_rng(seed)
    src_c, tgt_c = np.eye(d)[0], np.eye(d)[1]
    src = src_c + 0.1 * rng.normal(size=(100, d))
    tgt = tgt_c + 0.1 * rng.normal(size=(10, d))
    X = np.vstack([src, tgt])
    domains = np.array(["source"] * 100 + ["target"] * 10)
    normal = np.vstack([src_c + 0.1 * rng.normal(size=(30, d)), tgt_c + 0.1 * rng.normal(size=(30, d))])
    anomal = np.eye(d)[2] + np.eye(d)[0] * rng.uniform(0, 1, (60, 1)) + 0.1 * rng.normal(size=(60, d))
    return X, domains, np.vstack([normal, anomal]), np.r_[np.zeros(60), np.ones(60)]


@pytest.mark.parametrize("name", EMBEDDING_BACKENDS)
def test_auc_floor_on_separable_embeddings(name):
    X, domains, test, y = _separable()
    be = build_backend(name).fit(X, domains)
    scores = be.decision_function(test)
    assert scores.shape == (len(test),) and np.isfinite(scores).all()
    assert roc_auc_score(y, scores) > 0.95
    # The threshold is fitted on (leave-one-out) training scores: most normals fall below it.
    assert np.isfinite(be.threshold_)
    assert (be.decision_scores_ <= be.threshold_).mean() >= 0.7


def test_knn_distances_by_hand():
    X = np.array([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    be = build_backend("knn", k=1).fit(X, np.array(["source", "source", "target"]))
    x = np.array([[1.0, 1.0, 0.0], [2.0, 0.0, 0.0]])
    # (e1+e2)/√2 to e1: √(2 − 2·cos 45°)/2 = 0.38268; 2·e1 is e1 after normalisation: 0.
    assert np.allclose(be.decision_function(x), [math.sqrt(2 - math.sqrt(2)) / 2, 0.0], atol=1e-9)
    # Leave-one-out: e1's nearest other source is e2 (√2/2); e3 has no other target, so source: √2/2.
    assert np.allclose(be.decision_scores_, [math.sqrt(2) / 2] * 3)


def test_smote_tops_target_up_to_ratio_of_source():
    rng = np.random.default_rng(0)
    X = np.vstack([rng.normal(size=(50, 8)), rng.normal(size=(3, 8)) + 5])
    d = np.array(["source"] * 50 + ["target"] * 3)
    be = build_backend("knn_smote", smote_ratio=0.2, smote_neighbors=2).fit(X, d)
    assert len(be.target_) == 10 == 0.2 * 50  # 3 real + 7 synthetic
    assert np.allclose(np.linalg.norm(be.target_, axis=1), 1.0)  # re-normalised
    assert len(be.source_) == 50
    again = build_backend("knn_smote").fit(X, d)
    assert np.array_equal(be.target_, again.target_)  # seeded


def test_smote_points_lie_between_parents():
    X = np.array([[0.0, 0.0], [1.0, 0.0], [10.0, 0.0]])
    syn, parents = smote(X, 20, k=1, seed=0)
    for p, (a, b) in zip(syn, parents):
        lo, hi = sorted((X[a, 0], X[b, 0]))
        assert lo <= p[0] <= hi and p[1] == 0.0
    # k = 1: 0 and 1 are each other's neighbour, 10's neighbour is 1.
    assert {tuple(sorted(x)) for x in parents} <= {(0, 1), (1, 2)}


def test_rescale_constants_by_hand():
    X = np.array([[1.0, 0], [0, 1.0], [-1.0, 0], [0, -1.0]])  # unit square corners on the circle
    be = build_backend("knn_rescale", k=1, k_ref=2).fit(X, np.array(["source"] * 4))
    assert np.allclose(be.c_, math.sqrt(2))  # two nearest others at √2 each
    x = np.array([[1.0, 1.0]])  # 45°: 2·sin(22.5°) from e1 and e2
    assert be.decision_function(x)[0] == pytest.approx(2 * math.sin(math.pi / 8) / math.sqrt(2))
    assert np.allclose(be.decision_scores_, 1.0)  # nearest other at √2, divided by √2


def test_kmeans_centres_and_target_leave_one_out():
    rng = np.random.default_rng(0)
    src = np.vstack([np.eye(4)[0] + 0.01 * rng.normal(size=(20, 4)), np.eye(4)[1] + 0.01 * rng.normal(size=(20, 4))])
    X = np.vstack([src, np.eye(4)[2:]])
    d = np.array(["source"] * 40 + ["target"] * 2)
    be = build_backend("knn_kmeans", clusters=2).fit(X, d)
    assert be.centres_.shape == (4, 4) and be.n_source_centres_ == 2
    assert be.decision_function(np.eye(4)[2:3])[0] == pytest.approx(0.0, abs=1e-12)  # a target clip is a centre
    # Leave-one-out for the target clips: e3's nearest other centre is orthogonal -> 1 − cos = 1.
    assert np.allclose(be.decision_scores_[40:], 1.0, atol=0.01)


def test_mahalanobis_picks_the_closer_domain_and_falls_back_to_source():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(500, 3))
    tgt = rng.normal(size=(500, 3)) + [10, 0, 0]
    be = build_backend("mahalanobis").fit(np.vstack([src, tgt]), np.array(["source"] * 500 + ["target"] * 500))
    s = be.decision_function(np.array([[0.0, 0, 0], [10.0, 0, 0], [5.0, 0, 0]]))
    assert s[0] < 0.1 and s[1] < 0.1 and s[2] > 15  # ~ 25 / var for the midpoint
    one_target = build_backend("mahalanobis").fit(np.vstack([src, tgt[:1]]), np.array(["source"] * 500 + ["target"]))
    assert len(one_target.locations_) == 1


def test_standardize_scores_the_training_z_scores_and_is_saved_as_arrays():
    from asd.backends import backend_class

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 3)) * [1.0, 100.0, 0.01] + [5.0, -300.0, 2.0]
    dom = np.array(["source"] * 35 + ["target"] * 5)
    test = rng.normal(size=(7, 3)) * [1.0, 100.0, 0.01] + [5.0, -300.0, 2.0]
    be = build_backend("knn", standardize=True).fit(X, dom)
    np.testing.assert_allclose(be.center_, X.mean(0))
    np.testing.assert_allclose(be.scale_, X.std(0))
    z = lambda A: (A - X.mean(0)) / X.std(0)  # noqa: E731
    plain = build_backend("knn").fit(z(X), dom)
    np.testing.assert_allclose(be.decision_function(test), plain.decision_function(z(test)), rtol=1e-12)
    np.testing.assert_allclose(be.decision_scores_, plain.decision_scores_, rtol=1e-12)
    back = backend_class("knn").from_state(be.get_params(), be.fitted_state())
    np.testing.assert_array_equal(back.decision_function(test), be.decision_function(test))
    # a constant dimension stays finite instead of dividing by zero
    C = np.c_[X, np.ones(len(X))]
    assert np.isfinite(build_backend("knn", standardize=True).fit(C, dom).decision_function(np.c_[test, np.ones(7)])).all()


def test_domain_norm_scales_each_domain_by_its_leave_one_out_distances():
    # 1-d angles on the unit circle: source clips close together, target clips far apart
    ang = lambda a: np.c_[np.cos(a), np.sin(a)]  # noqa: E731
    src, tgt = np.array([0.0, 0.1, 0.25, 0.45]), np.array([2.0, 2.4, 3.0])
    X, dom = ang(np.r_[src, tgt]), np.array(["source"] * 4 + ["target"] * 3)
    d = lambda a, b: np.sqrt(2 - 2 * np.cos(a - b)) / 2  # noqa: E731  (the backend's distance)
    loo_s = np.array([d(0, 0.1), d(0.1, 0), d(0.25, 0.1), d(0.45, 0.25)])  # each clip's nearest other one
    loo_t = np.array([d(2.0, 2.4), d(2.4, 2.0), d(3.0, 2.4)])
    for norm in ("mean", "zscore"):
        be = build_backend("knn", domain_norm=norm).fit(X, dom)
        np.testing.assert_allclose(be.norm_, [[loo_s.mean(), loo_s.std()], [loo_t.mean(), loo_t.std()]])
        x = ang(np.array([1.0]))
        ds, dt = d(1.0, 0.45), d(1.0, 2.0)
        expect = min(ds / loo_s.mean(), dt / loo_t.mean()) if norm == "mean" else \
            min((ds - loo_s.mean()) / loo_s.std(), (dt - loo_t.mean()) / loo_t.std())
        assert be.decision_function(x)[0] == pytest.approx(expect)
    plain = build_backend("knn").fit(X, dom)
    assert plain.decision_function(ang(np.array([1.0])))[0] == pytest.approx(min(d(1.0, 0.45), d(1.0, 2.0)))
    with pytest.raises(Exception, match="domain_norm"):
        build_backend("knn", domain_norm="nope").fit(X, dom)


def test_fusion_is_the_mean_of_z_normalised_member_scores():
    X, domains, test, y = _separable()
    a, b = build_backend("knn_smote").fit(X, domains), build_backend("knn_rescale").fit(X, domains)
    z = lambda be, s: (s - be.decision_scores_.mean()) / be.decision_scores_.std()  # noqa: E731
    for how, op in (("mean", np.mean), ("max", np.max), ("min", np.min)):
        fu = build_backend("fusion", members=["knn_smote", "knn_rescale"], fusion=how).fit(X, domains)
        expect = op([z(a, a.decision_function(test)), z(b, b.decision_function(test))], axis=0)
        np.testing.assert_allclose(fu.decision_function(test), expect, rtol=1e-10)
        train = op([z(a, a.decision_scores_), z(b, b.decision_scores_)], axis=0)
        np.testing.assert_allclose(fu.decision_scores_, train, rtol=1e-10)
    with pytest.raises(Exception, match="backend.members"):
        build_backend("fusion", members=["recon"]).fit(X, domains)

"""backend.floor: the raw_stats floor fused into a detector (asd.backends.floor)."""

import numpy as np
import pytest

from asd.backends import floor
from asd.backends.base import fit_threshold
from asd.config.recipes import load_recipe
from asd.data.index import read_index
from asd.detector import Detector


@pytest.mark.parametrize("recipe, mode, n_train, fused", [
    ("dis_spec_scac_trainable", "auto", 30, True),
    ("dis_spec_scac_trainable", "auto", floor.AUTO_MAX_CLIPS, True),
    ("dis_spec_scac_trainable", "auto", floor.AUTO_MAX_CLIPS + 1, False),  # DCASE's ~1,000 clips: plain backend
    ("dis_spec_scac_trainable", "off", 30, False),
    ("ae", "auto", 30, False),  # auto is for the classifier family only: the only one measured
    ("ae", "on", 5000, True),
    ("raw_spec", "on", 30, True),
    ("raw_stats", "on", 30, False),  # the floor itself
])
def test_which_machine_types_get_the_floor(recipe, mode, n_train, fused):
    assert floor.wanted(load_recipe(recipe, [f"backend.floor={mode}"]), n_train) is fused


def _zscores(backend, scores):
    t = backend.decision_scores_
    return (scores - t.mean()) / t.std()


def test_fused_score_is_the_mean_of_both_z_scores_and_survives_save_load(toy_dir, tmp_path):
    cfg = load_recipe("raw_spec", ["data.clip_seconds=1.0", "backend.floor=on"])
    index = read_index(toy_dir, "toy")
    det = Detector(cfg)
    emb = det.embed(index)
    assert emb.stats is not None and emb.stats.shape == (len(emb.rows), 2 * 128)
    scores = det.fit(emb).score(emb)
    assert det.floored == sorted(index["machine"].unique())

    plain = Detector(load_recipe("raw_spec", ["data.clip_seconds=1.0", "backend.floor=off"])).fit(emb)
    base = Detector(load_recipe("raw_stats", ["data.clip_seconds=1.0"]))
    base_emb = base.embed(index)
    np.testing.assert_allclose(base_emb.embedding, emb.stats)  # the floor's input is raw_stats's embedding
    base.fit(base_emb)
    s_plain, s_base = plain.score(emb), base.score(base_emb)
    for m in det.floored:
        rows = (scores["machine"] == m).to_numpy()
        want = (_zscores(plain.backends_[m], s_plain["score"][rows].to_numpy())
                + _zscores(base.backends_[m], s_base["score"][rows].to_numpy())) / 2
        np.testing.assert_allclose(scores["score"][rows], want, rtol=1e-9, atol=1e-12)
        fused, p, f = det.backends_[m], plain.backends_[m], base.backends_[m]
        want_train = (_zscores(p, p.decision_scores_) + _zscores(f, f.decision_scores_)) / 2
        np.testing.assert_allclose(fused.decision_scores_, want_train)
        assert fused.threshold_ == fit_threshold(fused.decision_scores_, p.threshold, p.threshold_quantile)

    again = Detector.load(det.save(tmp_path / "det"))
    assert again.floored == det.floored and again.thresholds == det.thresholds
    np.testing.assert_array_equal(again.score(emb)["score"], scores["score"])
    reembedded = Detector.load(tmp_path / "det")  # embeddings without stats: the detector computes them
    emb2 = reembedded.embed(index)
    emb2.stats = None
    np.testing.assert_allclose(reembedded.score(emb2)["score"], scores["score"], rtol=1e-6)


def test_serving_path_scores_waves_like_the_index(toy_dir):
    from asd.data.waves import clip_samples, wave_store

    cfg = load_recipe("raw_spec", ["data.clip_seconds=1.0", "backend.floor=on"])
    index = read_index(toy_dir, "toy")
    det = Detector(cfg)
    emb = det.embed(index)
    scores = det.fit(emb).score(emb)
    m = det.floored[0]
    rows = emb.rows[(emb.rows["machine"] == m) & (emb.rows["phase"] == "test")].reset_index(drop=True)
    waves = wave_store(rows, cfg, "test").batch(np.arange(len(rows)), clip_samples(cfg))
    got, decisions = det.score_waves(m, waves)
    want = scores[scores["machine"] == m]
    np.testing.assert_allclose(got, want["score"], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(decisions, want["decision"])


def test_floor_off_scores_exactly_as_before(toy_dir):
    index = read_index(toy_dir, "toy")
    off = Detector(load_recipe("raw_spec", ["data.clip_seconds=1.0", "backend.floor=off"]))
    emb = off.embed(index)
    assert emb.stats is None and off.fit(emb).floored == []
    from asd.backends import build_backend

    rows = emb.rows
    for m, b in off.backends_.items():
        tr = ((rows["machine"] == m) & (rows["phase"] == "train")).to_numpy()
        ref = build_backend("knn", **vars(off.cfg.backend)).fit(emb.embedding[tr], rows["domain"][tr].to_numpy())
        np.testing.assert_array_equal(b.decision_scores_, ref.decision_scores_)

"""One battery over every registered brain method, as scikit-learn checks every estimator.

A method registered with ``@brain_method`` is run here through its recipe (on real digits with pixel
embeddings stored as "px") and must: refuse an existing key and change nothing; record every argument;
run again from its record alone with the same result; load in a fresh process with the same state;
write only the samples of the view it ran on; delete the fields it wrote with its run; keep its scores
in [0, 1]; and give the same result for an array as for the stored set with the same rows.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys

import numpy as np
import pytest

import embedlens as el
from embedlens.brain.contract import METHODS, rerun

PREP = "battery_pred"


def _predictions(ds):
    if PREP not in ds.list_brain_runs():
        el.compute_predictions(ds, embeddings="px", pred_field=PREP, folds=3, progress=False)


CMP_REF = "battery_reference"


def _reference(ds):
    """A second dataset (300 of the digits, their "px" embeddings cloned with them) to compare against."""
    if not el.dataset_exists(CMP_REF):
        ds.take(300, seed=2).clone(CMP_REF)


# name -> (what it needs first, its arguments on a collection, the key its run is stored under)
RECIPES = {
    "compute_visualization": (None, lambda s: dict(embeddings="px", method="pca", brain_key="b_viz", seed=0),
                              "b_viz"),
    "compute_predictions": (None, lambda s: dict(embeddings="px", pred_field="b_pred", folds=3), "b_pred"),
    "compute_mistakenness": (_predictions, lambda s: dict(pred_field=PREP, mistakenness_field="b_mist"),
                             "b_mist"),
    "compute_hardness": (_predictions, lambda s: dict(label_field=PREP, hardness_field="b_hard"), "b_hard"),
    "compute_similarity": (None, lambda s: dict(embeddings="px", brain_key="b_sim"), "b_sim"),
    "compute_uniqueness": (None, lambda s: dict(embeddings="px", uniqueness_field="b_uniq"), "b_uniq"),
    "propose_labels": (None, lambda s: dict(embeddings="px", unlabeled=s.take(100, seed=1),
                                            pred_field="b_prop", min_confidence=0.5), "b_prop"),
    "compute_prototypes": (_predictions, lambda s: dict(predictions_run=PREP, brain_key="b_proto",
                                                        scores_field="b_proto_scores"), "b_proto"),
    "compute_class_centroids": (None, lambda s: dict(embeddings="px", brain_key="b_cent"), "b_cent"),
    "compare_embeddings": (None, lambda s: dict(embeddings_sets=["px", "pixels"], trust_samples=200,
                                                queries=2, brain_key="b_cmp"), "b_cmp"),
    "compare_to_reference": (_reference, lambda s: dict(reference=CMP_REF, embeddings="px",
                                                        reference_embeddings="px", brain_key="b_cmp",
                                                        n_permutations=99), "b_cmp"),
}


def test_every_registered_method_is_in_the_battery():
    assert set(RECIPES) == set(METHODS)


def _run(name, samples, **extra):
    prep, args, key = RECIPES[name]
    if prep:
        prep(samples._dataset)
    kwargs = {**args(samples), **extra}
    if "progress" in inspect.signature(METHODS[name].function).parameters:
        kwargs.setdefault("progress", False)
    return METHODS[name].function(samples, **kwargs), key


def _state(ds, key):
    """What a run produced: its written fields' values and its results' arrays."""
    info = ds.get_brain_info(key)
    res = ds.load_brain_results(key)
    fields = {f: ds.values(f) for f in info["fields"] if f in ds.get_field_schema()}
    arrays = {n: np.asarray(a) for n, a in res._arrays.items()}
    return res.keys, fields, arrays


def _plain(v):
    """A field value to compare: labels as dicts without their (fresh) ids, numbers as floats."""
    if hasattr(v, "to_dict"):
        return {k: _plain(x) for k, x in v.to_dict().items() if k != "id"}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [_plain(x) for x in v]
    return v


def _close(x, y):
    if isinstance(x, dict):
        assert isinstance(y, dict) and x.keys() == y.keys()
        for k in x:
            _close(x[k], y[k])
    elif isinstance(x, list):
        assert isinstance(y, list) and len(x) == len(y)
        for a, b in zip(x, y):
            _close(a, b)
    elif isinstance(x, float) and isinstance(y, (int, float)):
        assert x == pytest.approx(y, rel=1e-4, abs=1e-5)
    else:
        assert x == y


def _same(a, b):
    keys_a, fields_a, arrays_a = a
    keys_b, fields_b, arrays_b = b
    assert keys_a == keys_b and fields_a.keys() == fields_b.keys() and arrays_a.keys() == arrays_b.keys()
    for f in fields_a:
        _close(_plain(fields_a[f]), _plain(fields_b[f]))
    for n in arrays_a:
        if arrays_a[n].dtype.kind == "U":  # ids (compare's reference_ids)
            np.testing.assert_array_equal(arrays_a[n], arrays_b[n])
            continue
        np.testing.assert_allclose(arrays_a[n].astype(float), arrays_b[n].astype(float), rtol=1e-4, atol=1e-5)


@pytest.fixture
def ds(digits_px_clean):
    return digits_px_clean


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_existing_key_is_refused_and_nothing_changes(ds, name):
    _run(name, ds)
    key = RECIPES[name][2]
    before = ds.get_brain_info(key)
    state = _state(ds, key)
    with pytest.raises(el.InvalidInputError, match="exists"):
        _run(name, ds)
    assert ds.get_brain_info(key) == before
    _same(_state(ds, key), state)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_the_record_covers_the_signature_and_reruns_to_the_same_result(ds, name):
    _run(name, ds)
    key = RECIPES[name][2]
    call = ds.get_brain_info(key)["config"]["call"]
    assert call["brain_method"] == name
    assert set(METHODS[name].parameters) <= set(call), set(METHODS[name].parameters) - set(call)
    json.dumps(call)  # plain JSON
    first = _state(ds, key)
    rerun(ds, key)
    _same(_state(ds, key), first)


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_results_load_in_a_fresh_process_with_their_state(ds, name):
    res, key = _run(name, ds)
    here = {"summary": res.summary(), "ids": res.ids[:5], "n": len(res.ids)}
    code = ("import json, embedlens as el; r = el.load_dataset(%r).load_brain_results(%r); "
            "print(json.dumps({'summary': r.summary(), 'ids': r.ids[:5], 'n': len(r.ids)}))" % (ds.name, key))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, "EMBEDLENS_HOME": str(ds.path.parent)}, timeout=300)
    assert out.returncode == 0, out.stderr
    there = json.loads(out.stdout.strip().splitlines()[-1])
    assert there == json.loads(json.dumps(here))
    assert here["summary"]["key"] == key and here["summary"]["rows"] == here["n"]


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_a_runs_fields_cover_only_its_view_and_go_with_it(ds, name):
    view = ds.match_tags("test")
    res, key = _run(name, view)
    inside = set(view.values("id"))
    assert set(res.sample_ids) <= inside
    fields = ds.get_brain_info(key)["fields"]
    for f in fields:
        outside = [v for i, v in zip(ds.values("id"), ds.values(f)) if i not in inside]
        assert all(v is None for v in outside), f
    ds.delete_brain_run(key)
    assert not set(fields) & set(ds.get_field_schema())
    assert key not in ds.list_brain_runs()


@pytest.mark.parametrize("name", sorted(RECIPES))
def test_scores_are_in_range_and_rank_the_top(ds, name):
    res, key = _run(name, ds)
    if res.scores is None:
        with pytest.raises(el.InvalidInputError, match="no scores"):
            res.top(3)
        return
    s = np.asarray(res.scores, dtype=float)
    s = s[np.isfinite(s)]
    assert len(s) and s.min() >= 0.0 and s.max() <= 1.0
    top = res.top(3)
    by_id = dict(zip(res.keys, np.asarray(res.scores, dtype=float)))
    ranked = [by_id[i] for i in top.values("id")]
    assert ranked == sorted(ranked, reverse=True) and ranked[0] == pytest.approx(s.max())


def test_similarity_state_survives_a_fresh_process(ds):
    """find_unique() and find_duplicates() results are kept with the run, as FiftyOne users expect."""
    index = el.compute_similarity(ds, embeddings="px", brain_key="b_state", progress=False)
    unique = index.find_unique(20)
    dups = index.find_duplicates(fraction=0.02)
    code = ("import json, embedlens as el; r = el.load_dataset(%r).load_brain_results('b_state'); "
            "print(json.dumps([r.unique_ids, r.duplicate_ids, r.thresh, len(r.duplicates_view())]))" % ds.name)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "EMBEDLENS_HOME": str(ds.path.parent)}, timeout=300)
    assert out.returncode == 0, out.stderr
    u, d, thresh, n_view = json.loads(out.stdout.strip().splitlines()[-1])
    assert u == unique and d == dups and thresh == pytest.approx(index.thresh)
    assert n_view == len(index.duplicates_view())


@pytest.mark.parametrize("name", sorted(n for n in RECIPES if "embeddings" in METHODS[n].parameters))
def test_an_array_and_the_stored_set_give_the_same_result(ds, name):
    prep, args, key = RECIPES[name]
    _run(name, ds)
    by_name = _state(ds, key)
    kwargs = {**args(ds), "embeddings": np.array(ds.get_embeddings("px")), "overwrite": True, "progress": False}
    METHODS[name].function(ds, **kwargs)
    by_array = _state(ds, key)
    # a similarity index keeps a copy of an array it was given (a stored set is read by reference)
    by_array[2].pop("embeddings", None)
    _same(by_array, by_name)


def test_a_view_of_another_dataset_reruns_on_that_dataset(ds):
    """Regression: a recorded view was rebuilt on the run's own dataset, whatever dataset it came from."""
    _reference(ds)
    reference = el.load_dataset(CMP_REF).limit(200)
    el.compare_to_reference(ds, reference, embeddings="px", reference_embeddings="px", brain_key="b_other",
                            n_permutations=99)
    rerun(ds, "b_other")
    recorded = ds.get_brain_info("b_other")["config"]["reference"]
    assert recorded["dataset"] == CMP_REF and recorded["count"] == 200

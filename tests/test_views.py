"""Views: every stage and expression compiled to SQL, checked against the same filter done in Python."""

from __future__ import annotations

import random

import pytest

import embedlens as el
from embedlens import F


@pytest.fixture
def ds():
    rng = random.Random(0)
    samples = []
    for i in range(60):
        dets = [el.Detection(rng.choice(["cat", "dog", "car"]), [0.1, 0.1, 0.3, 0.3],
                             confidence=round(rng.random(), 3)) for _ in range(i % 4)]
        samples.append(el.Sample(f"/data/{i:03d}.png", tags=["even"] if i % 2 == 0 else [],
                                 ground_truth=el.Classification(str(i % 5)), score=rng.random(),
                                 n=i, words=["a", "b"] if i % 3 == 0 else ["c"],
                                 predictions=el.Detections(detections=dets) if i % 7 else None))
    d = el.Dataset("views")
    d.add_samples(samples)
    return d


def _rows(ds):
    return list(zip(ds.values("id"), ds.values("n"), ds.values("score"), ds.values("ground_truth.label"),
                    ds.values("tags"), ds.values("words"), ds.values("predictions.detections.label")))


def test_match_expressions_agree_with_python(ds):
    rows = _rows(ds)
    cases = [
        (F("ground_truth.label") == "3", lambda r: r[3] == "3"),
        (F("ground_truth.label") != "3", lambda r: r[3] != "3"),
        ((F("score") > 0.5) & (F("n") <= 40), lambda r: r[2] > 0.5 and r[1] <= 40),
        ((F("score") < 0.2) | (F("n") >= 55), lambda r: r[2] < 0.2 or r[1] >= 55),
        (~(F("score") < 0.5), lambda r: not r[2] < 0.5),
        (F("ground_truth.label").is_in(["1", "2"]), lambda r: r[3] in ("1", "2")),
        (F("words").contains("a"), lambda r: "a" in r[5]),
        (F("words").contains(["a", "c"]), lambda r: "a" in r[5] or "c" in r[5]),
        (F("words").contains(["a", "b"], all=True), lambda r: {"a", "b"} <= set(r[5])),
        (F("words").length() == 1, lambda r: len(r[5]) == 1),
        (F("predictions.detections.label").contains("cat"), lambda r: bool(r[6]) and "cat" in r[6]),
        (F("predictions.detections").length() >= 2, lambda r: r[6] is not None and len(r[6]) >= 2),
        (F("predictions").exists(), lambda r: r[6] is not None),
        (F("predictions").exists(False), lambda r: r[6] is None),
        (F("score") * 10 > F("n") / 6, lambda r: r[2] * 10 > r[1] / 6),
        (F("ground_truth.label").is_in(["1"]) & ~F("tags").contains("even"), lambda r: r[3] == "1" and not r[4]),
    ]
    for expr, fn in cases:
        want = [r[0] for r in rows if fn(r)]
        view = ds.match(expr)
        assert view.values("id") == want, expr
        assert len(view) == len(want)


def test_none_comparisons_and_missing_values(ds):
    assert ds.match(F("predictions") == None).count() == ds.exists("predictions", False).count()  # noqa: E711
    assert ds.match(F("predictions") != None).count() == 60 - 9  # noqa: E711
    with pytest.raises(ValueError, match="None can only be compared"):
        ds.match(F("score") > None)


def test_sort_limit_skip_combinations(ds):
    rows = _rows(ds)
    by_score = [r[0] for r in sorted(rows, key=lambda r: r[2])]
    assert ds.sort_by("score").values("id") == by_score
    assert ds.sort_by("score", reverse=True).limit(5).values("id") == by_score[::-1][:5]
    assert ds.sort_by("score").skip(10).limit(5).values("id") == by_score[10:15]
    assert ds.sort_by("score").limit(15).skip(10).values("id") == by_score[10:15]
    assert ds.sort_by("score").limit(15).limit(20).values("id") == by_score[:15]
    # a filter after a limit filters the limited rows, in their order
    first20 = by_score[:20]
    want = [i for i in first20 if dict((r[0], r[1]) for r in rows)[i] % 2 == 0]
    assert ds.sort_by("score").limit(20).match_tags("even").values("id") == want
    # a later sort is the primary key, the earlier one breaks ties
    expect = [r[0] for r in sorted(rows, key=lambda r: (r[3], r[2]))]
    assert ds.sort_by("score").sort_by("ground_truth.label").values("id") == expect
    assert len(ds.skip(55)) == 5 and len(ds.limit(0)) == 0
    with pytest.raises(ValueError, match="non-negative integer"):
        ds.limit(-1)


def test_select_exclude_take_shuffle(ds):
    ids = ds.values("id")
    pick = [ids[7], ids[3], ids[50]]
    assert ds.select(pick).values("id") == [ids[3], ids[7], ids[50]]
    assert ds.select(pick, ordered=True).values("id") == pick
    assert ds.select(pick, ordered=True).limit(2).values("id") == pick[:2]
    assert ds.sort_by("n", reverse=True).limit(10).select(pick).values("id") == [ids[50]]
    assert ds.exclude(pick).count() == 57 and ids[3] not in ds.exclude(pick).values("id")
    t1, t2 = ds.take(10, seed=3).values("id"), ds.take(10, seed=3).values("id")
    assert t1 == t2 and len(set(t1)) == 10 and t1 != ds.take(10, seed=4).values("id")
    assert sorted(ds.shuffle(seed=1).values("id")) == sorted(ids)
    assert ds.shuffle(seed=1).values("id") != ids


def test_filter_labels(ds):
    raw = ds.values("predictions.detections.confidence")
    view = ds.filter_labels("predictions", F("confidence") > 0.5)
    want = [[c for c in confs if c > 0.5] for confs in raw if confs]
    want = [w for w in want if w]
    assert view.values("predictions.detections.confidence") == want
    keep_all = ds.filter_labels("predictions", F("label") == "cat", only_matches=False)
    assert len(keep_all) == 60
    labels = keep_all.values("predictions.detections.label")
    assert all(x is None or set(x) <= {"cat"} for x in labels)
    # stored data is untouched by a view
    assert ds.values("predictions.detections.confidence") == raw
    cls = ds.filter_labels("ground_truth", F("label").is_in(["1", "2"]))
    assert set(cls.values("ground_truth.label")) == {"1", "2"} and len(cls) == 24
    with pytest.raises(ValueError, match="needs a label field"):
        ds.filter_labels("score", F("x") > 1)


def test_patches_view(ds):
    n_objects = sum(len(x) for x in ds.values("predictions.detections.label") if x)
    patches = ds.to_patches("predictions")
    assert len(patches) == n_objects
    assert patches.get_field_schema()["predictions"] == "Detection"
    first = patches.first()
    parent = ds[first.sample_id]
    assert first.predictions.id == parent.predictions.detections[0].id and first.filepath == parent.filepath
    cats = patches.match(F("predictions.label") == "cat")
    assert len(cats) == ds.count_values("predictions.detections.label")["cat"]
    high = ds.filter_labels("predictions", F("confidence") > 0.5).to_patches("predictions")
    assert all(c > 0.5 for c in high.values("predictions.confidence"))
    # tags on a patches view are the objects' tags
    cats.limit(3).tag_samples("review")
    assert patches.count_sample_tags() == {"review": 3}
    assert ds.count_sample_tags().get("review") is None
    n_cats = len(cats)
    cats.limit(3).set_values("predictions.label", ["dog", "dog", "dog"])
    assert len(patches.match(F("predictions.label") == "cat")) == n_cats - 3
    assert patches.match_tags("review").values("predictions.label") == ["dog"] * 3


def test_select_fields_and_unknown_fields(ds):
    view = ds.select_fields(["score"])
    assert set(view.get_field_schema()) == {"id", "filepath", "tags", "metadata", "score"}
    assert not view.first().has_field("ground_truth")
    with pytest.raises(el.UnknownFieldError, match="unknown field 'ground_truth'"):
        view.match(F("ground_truth.label") == "1")
    with pytest.raises(el.UnknownFieldError, match="unknown field 'nope'"):
        ds.sort_by("nope")
    with pytest.raises(TypeError, match="has no truth value"):
        if F("score") > 1:
            pass


def test_saved_views_reload_in_a_fresh_handle(ds):
    view = (ds.match((F("score") > 0.3) & F("ground_truth.label").is_in(["1", "2"]))
            .filter_labels("predictions", F("confidence") > 0.2, only_matches=False)
            .sort_by("n", reverse=True).take(5, seed=2))
    ds.save_view("hard", view)
    again = el.load_dataset("views").load_saved_view("hard")
    assert again.values("id") == view.values("id") and again == view
    assert ds.list_saved_views() == ["hard"]
    with pytest.raises(ValueError, match="exists"):
        ds.save_view("hard", view)
    ds.delete_saved_view("hard")
    with pytest.raises(KeyError, match="no saved view 'hard'"):
        ds.load_saved_view("hard")


def test_bulk_ops_apply_to_view_only(ds):
    view = ds.match(F("n") < 10)
    view.set_values("flag", [True] * 10)
    flags = ds.values("flag")
    assert flags[:10] == [True] * 10 and flags[10:] == [None] * 50
    assert view.count_values("ground_truth.label") == {str(k): 2 for k in range(5)}
    assert view.count_sample_tags() == {"even": 5}


def test_index_keeps_results_and_is_used(ds):
    before = ds.match(F("ground_truth.label") == "2").sort_by("score").values("id")
    name = ds.create_index("score")
    ds.create_index("ground_truth.label")
    assert name in ds.list_indexes()
    assert ds.match(F("ground_truth.label") == "2").sort_by("score").values("id") == before
    plan = ds._db.fetchall("EXPLAIN QUERY PLAN " + ds.sort_by("score").limit(3)._query().sql()[0],
                           ds.sort_by("score").limit(3)._query().sql()[1])
    assert any("idx_score" in str(r) for r in plan)
    compound = ds.create_index(["ground_truth.label", "score"])
    view = ds.match(F("ground_truth.label") == "2").sort_by("score")
    assert view.values("id") == before
    plan = ds._db.fetchall("EXPLAIN QUERY PLAN " + view._query().sql()[0], view._query().sql()[1])
    assert any(compound in str(r) for r in plan) and not any("TEMP B-TREE" in str(r) for r in plan)
    with pytest.raises(ValueError, match="single-valued"):
        ds.create_index("words")


def test_dict_keys_that_start_with_a_digit(ds):
    """Regression: ``sort_by("prototype_scores.7")`` was refused: MNIST's class names are digits."""
    scores = [{"7": float(i % 9), "a1": -float(i)} for i in range(len(ds))]
    ds.set_values("scores", scores)
    top = ds.sort_by("scores.7", reverse=True).limit(5)
    assert top.values("scores.7") == [8.0] * 5
    assert len(ds.match(F("scores.7") > 6)) == sum(s["7"] > 6 for s in scores)
    assert ds.values("scores.a1")[:3] == [0.0, -1.0, -2.0]
    with pytest.raises(el.InvalidInputError):
        ds.sort_by("scores.7'")

"""The app's HTTP API on real datasets: every route, binary points, tags persisted to SQLite, bad input,
path traversal, auth tokens, live updates over the WebSocket, and a live server on a free port."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import embedlens as el

pytest.importorskip("fastapi")
pytest.importorskip("httpx")

with warnings.catch_warnings():  # starlette's notice about its httpx client, not about embedlens
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient
    from starlette.websockets import WebSocketDisconnect

from embedlens.app import AppState, create_app
from embedlens.app.session import Session, launch_app, resolve_auth_token
from embedlens.brain.visualization import compute_visualization

pytestmark = pytest.mark.usefixtures("in_module_home")  # datasets built once per module, shared by its tests
JSON = {"content-type": "application/json"}
BIN = {"content-type": "application/octet-stream"}


@pytest.fixture(scope="module")
def digits(module_home):
    """Real handwritten digits with a PCA layout of their pixels under brain key "pca"."""
    ds = el.load_sample_dataset("digits", progress=False)
    compute_visualization(ds, model="pixels", method="pca", brain_key="pca", seed=0, progress=False)
    return ds


@pytest.fixture(scope="module")
def boxes(module_home, digits):
    """20 digit images with two boxes each, a missing image, and a per-object layout under "objects"."""
    ds = el.Dataset("boxes")
    samples = []
    for i, (fp, label) in enumerate(zip(digits.values("filepath")[:20], digits.values("ground_truth.label"))):
        dets = [el.Detection(label=label, bounding_box=[0.1, 0.1, 0.4, 0.4]),
                el.Detection(label="other", bounding_box=[0.5, 0.5, 0.4, 0.4])]
        samples.append(el.Sample(fp, boxes=el.Detections(detections=dets), score=float(i)))
    samples.append(el.Sample(str(module_home / "no-such-image.png"), score=99.0))
    ds.add_samples(samples)
    n = len(ds.to_patches("boxes"))
    pts = np.random.default_rng(0).normal(size=(n, 2)).astype(np.float32)
    compute_visualization(ds, patches_field="boxes", points=pts, brain_key="objects", progress=False)
    return ds


@pytest.fixture
def state(digits):
    st = AppState(digits)
    yield st
    digits.untag_samples(["t-app", "t-ids", "t-bad", "t-ui", "t-session"])


@pytest.fixture
def client(state):
    with TestClient(create_app(state)) as c:
        yield c


def fresh_tags(ds, ids):
    """Tags read straight from the SQLite file, through a new connection: what persisted."""
    con = sqlite3.connect(ds.path / "dataset.db")
    try:
        rows = dict(con.execute(f"SELECT id, tags FROM samples WHERE id IN ({','.join('?' * len(ids))})", ids))
    finally:
        con.close()
    return {k: json.loads(v) for k, v in rows.items()}


# ---------------------------------------------------------------------------------------------- reading


def test_datasets_state_and_summary(client, digits):
    d = client.get("/api/datasets").json()
    assert "digits" in d["datasets"] and d["current"] == "digits"
    st = client.get("/api/state").json()
    assert st["dataset"] == "digits" and st["view"] == {"stages": [], "count": 1797}
    assert st["grid_count"] == 1797 and st["selected_count"] == 0 and st["lasso"] is None
    s = client.get("/api/summary").json()
    types = {f["name"]: f["type"] for f in s["fields"]}
    assert types["ground_truth"] == "Classification" and types["index"] == "int"
    assert {f["name"]: f["count"] for f in s["fields"]}["ground_truth"] == 1797
    assert {t["tag"]: t["count"] for t in s["tags"]} == digits.count_sample_tags()
    gt = {v["value"]: v["count"] for v in s["labels"]["ground_truth"]["values"]}
    assert gt == digits.count_values("ground_truth.label")
    numeric = {f["name"]: f for f in s["numeric"]}
    assert (numeric["index"]["min"], numeric["index"]["max"]) == digits.bounds("index")
    assert s["actions"] == {"duplicates": [], "unique": [], "mistakes": [], "hardness": [], "novelty": []}


def test_samples_pages_follow_the_view(client, digits):
    ids = digits.values("id")
    page = client.get("/api/samples", params={"offset": 100, "limit": 50}).json()
    assert page["total"] == 1797 and [s["id"] for s in page["samples"]] == ids[100:150]
    tile = page["samples"][0]
    assert tile["thumb"] == f"/media/thumb/{tile['id']}" and "filepath" not in tile
    assert not any("sample-data" in json.dumps(s) for s in page["samples"])  # no file paths leak into the grid
    assert tile["labels"][0] == {"field": "ground_truth", "label": digits[tile["id"]].ground_truth.label,
                                 "confidence": None}
    assert tile["tags"] == digits[tile["id"]].tags
    last = client.get("/api/samples", params={"offset": 1790, "limit": 100}).json()
    assert len(last["samples"]) == 7
    for bad in ({"limit": 0}, {"limit": 5000}, {"offset": -1}, {"limit": "many"}):
        assert client.get("/api/samples", params=bad).status_code == 422
    assert client.get("/api/state").status_code == 200


def test_sample_detail(client, digits):
    sid = digits.values("id")[5]
    d = client.get(f"/api/sample/{sid}").json()
    assert d["id"] == sid and d["fields"]["ground_truth"]["label"] == digits[sid].ground_truth.label
    assert d["fields"]["filepath"] == digits[sid].filepath
    assert client.get("/api/sample/" + "0" * 24).status_code == 404
    assert client.get("/api/sample/not-an-id").status_code == 400


def test_sample_detail_lists_every_box(boxes):
    with TestClient(create_app(AppState(boxes))) as c:
        sid = boxes.values("id")[3]
        d = c.get(f"/api/sample/{sid}").json()
        dets = boxes[sid].boxes.detections
        assert [(b["id"], b["label"], b["box"]) for b in d["boxes"]] == \
            [(x.id, x.label, x.bounding_box) for x in dets]
        assert d["schema"]["boxes"] == "Detections" and d["fields"]["score"] == 3.0
        tile = c.get("/api/samples", params={"limit": 5}).json()["samples"][3]
        assert [b["box"] for b in tile["boxes"]] == [[0.1, 0.1, 0.4, 0.4], [0.5, 0.5, 0.4, 0.4]]


# ---------------------------------------------------------------------------------------------- media


def test_media_is_served_by_sample_id(client, digits):
    sid = digits.values("id")[3]
    r = client.get(f"/media/thumb/{sid}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    assert Image.open(io.BytesIO(r.content)).size == (8, 8)  # never upscaled
    r = client.get(f"/media/full/{sid}")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    assert r.content == Path(digits[sid].filepath).read_bytes()


@pytest.mark.parametrize("path", [
    "/media/full/..%2F..%2F..%2Fetc%2Fpasswd",
    "/media/full/%2Fetc%2Fpasswd",
    "/media/thumb/..%2Fdataset.db",
    "/media/full/....%2F%2Fetc%2Fpasswd",
    "/media/full/" + "0" * 24,
    "/media/thumb/" + "g" * 24,
    "/media/full/%00",
    "/assets/..%2F..%2Fstate.py",
    "/assets/.hidden",
])
def test_path_traversal_gets_404(client, path):
    r = client.get(path)
    assert r.status_code == 404, (path, r.status_code)
    assert b"root:" not in r.content
    assert client.get("/api/state").status_code == 200


def test_a_sample_filepath_is_not_an_id(client, digits):
    fp = digits.values("filepath")[0]
    assert client.get("/media/full/" + fp.replace("/", "%2F")).status_code == 404
    assert client.get("/media/full" + fp).status_code == 404


def test_missing_image_gets_a_placeholder(boxes):
    with TestClient(create_app(AppState(boxes))) as c:
        sid = boxes.match(el.F("score") == 99.0).values("id")[0]
        for kind in ("thumb", "full"):
            r = c.get(f"/media/{kind}/{sid}")
            assert r.status_code == 200 and r.headers["content-type"].startswith("image/svg+xml")
            assert r.headers["x-embedlens-missing"] == "1"
        page = c.get("/api/samples", params={"limit": 100}).json()
        assert [s["missing"] for s in page["samples"]].count(True) == 1


# ---------------------------------------------------------------------------------------------- plots


def test_runs_and_binary_points(client, digits):
    runs = client.get("/api/runs").json()["runs"]
    assert [r["key"] for r in runs] == ["pca"] and runs[0]["method"] == "pca"
    results = digits.load_brain_results("pca")
    r = client.get("/api/points/pca")
    assert r.headers["content-type"] == "application/octet-stream"
    assert len(r.content) == 1797 * 2 * 4 and r.headers["x-embedlens-count"] == "1797"
    pts = np.frombuffer(r.content, dtype="<f4").reshape(-1, 2)
    np.testing.assert_array_equal(pts, results.points)
    meta = client.get("/api/points/pca/meta").json()
    assert meta["count"] == 1797 and meta["patches_field"] is None
    assert meta["bounds"] == pytest.approx([*results.points.min(0), *results.points.max(0)])
    assert {"path": "ground_truth.label", "kind": "categorical"} in meta["color_fields"]
    ids = client.get("/api/points/pca/ids").json()
    assert ids["keys"] == results.keys and ids["sample_ids"] == results.sample_ids
    assert client.get("/api/points/nope").status_code == 404
    assert client.get("/api/points/nope/meta").status_code == 404


def test_colour_by_values_are_codes_and_numbers(client, digits):
    results = digits.load_brain_results("pca")
    h = client.get("/api/points/pca/values", params={"field": "ground_truth.label"}).json()
    assert h["kind"] == "categorical" and h["dtype"] == "<u1" and h["categories"] == [str(i) for i in range(10)]
    codes = np.frombuffer(client.get("/api/points/pca/values.bin",
                                     params={"field": "ground_truth.label"}).content, dtype="<u1")
    assert [h["categories"][c] for c in codes] == results.values("ground_truth.label")
    assert h["counts"] == np.bincount(codes, minlength=10).tolist()
    h = client.get("/api/points/pca/values", params={"field": "index"}).json()
    assert h["kind"] == "numeric" and h["min"] == 0 and h["max"] == 1796
    nums = np.frombuffer(client.get("/api/points/pca/values.bin", params={"field": "index"}).content, dtype="<f4")
    np.testing.assert_array_equal(nums, np.array(results.values("index"), dtype=np.float32))
    for bad in ("nope", "filepath", "ground_truth", "ground_truth.label; DROP TABLE samples"):
        r = client.get("/api/points/pca/values", params={"field": bad})
        assert r.status_code == 400 and "cannot colour by" in r.json()["detail"]
    assert client.get("/api/points/pca/values").status_code == 422
    assert len(digits) == 1797


def test_lasso_sets_the_grid_and_the_selection(client, state, digits):
    results = digits.load_brain_results("pca")
    idx = np.flatnonzero(results.points[:, 0] > np.quantile(results.points[:, 0], 0.9)).astype("<u4")
    r = client.post("/api/points/pca/lasso", content=idx.tobytes(), headers=BIN)
    assert r.status_code == 200 and r.json() == client.get("/api/state").json()  # the answer is the new state
    want = {results.keys[i] for i in idx}
    assert set(state.selected) == want
    st = r.json()
    assert st["grid_count"] == len(idx) and st["lasso"] == {"brain_key": "pca", "points": len(idx),
                                                          "samples": len(idx)}
    assert st["selected_count"] == len(idx) and not st["grid_patches"]
    page = client.get("/api/samples", params={"limit": 1000}).json()
    assert {s["id"] for s in page["samples"]} == want and all(s["selected"] for s in page["samples"])
    back = np.frombuffer(client.get("/api/points/pca/lasso").content, dtype="<u4")
    np.testing.assert_array_equal(back, np.sort(idx))
    assert client.get("/api/points/other/lasso").content == b""
    sel = np.frombuffer(client.post("/api/points/pca/indices", json={}).content, dtype="<u4")
    np.testing.assert_array_equal(sel, np.sort(idx))
    # bad bodies: not uint32s, out of range, wrong content type; the server keeps serving
    assert client.post("/api/points/pca/lasso", content=b"abc", headers=BIN).status_code == 400
    big = np.array([5_000_000], dtype="<u4").tobytes()
    assert client.post("/api/points/pca/lasso", content=big, headers=BIN).status_code == 400
    assert client.post("/api/points/pca/lasso", content=idx.tobytes(),
                       headers={"content-type": "text/plain"}).status_code == 415
    assert client.post("/api/points/nope/lasso", content=idx.tobytes(), headers=BIN).status_code == 404
    assert set(state.selected) == want  # unchanged by the bad requests
    # an empty lasso clears it
    st = client.post("/api/points/pca/lasso", content=b"", headers=BIN).json()
    assert st["lasso"] is None and st["selected_count"] == 0 and st["grid_count"] == 1797


def test_object_points_come_with_their_boxes(boxes):
    """/ids and /point/{i} of an object-level run give each object's box: the plot draws that crop."""
    with TestClient(create_app(AppState(boxes))) as c:
        results = boxes.load_brain_results("objects")
        want = results.values("boxes.bounding_box")
        ids = c.get("/api/points/objects/ids").json()
        assert ids["keys"] == results.keys and ids["boxes"] == want
        assert c.get("/api/points/objects/point/3").json() == {
            "index": 3, "id": results.keys[3], "sample_id": results.sample_ids[3], "box": want[3]}


def test_patches_lasso_selects_parent_samples_and_objects(boxes):
    st = AppState(boxes)
    with TestClient(create_app(st)) as c:
        results = boxes.load_brain_results("objects")
        meta = c.get("/api/points/objects/meta").json()
        assert meta["count"] == 40 and meta["patches_field"] == "boxes"
        assert {"path": "boxes.label", "kind": "categorical"} in meta["color_fields"]
        h = c.get("/api/points/objects/values", params={"field": "boxes.label"}).json()
        assert "other" in h["categories"] and h["counts"][h["categories"].index("other")] == 20
        idx = np.array([0, 1, 2, 5], dtype="<u4")  # both objects of image 0, one of image 1, one of image 2
        msg = c.post("/api/points/objects/lasso", content=idx.tobytes(), headers=BIN).json()
        assert msg["lasso"] == {"brain_key": "objects", "points": 4, "samples": 3}
        parents = list(dict.fromkeys(results.sample_ids[i] for i in idx))
        assert st.selected == parents
        assert st.selected_labels == [{"label_id": results.keys[i], "sample_id": results.sample_ids[i],
                                       "field": "boxes"} for i in idx]
        # the grid switches to the lassoed objects, each tile with its own box
        assert msg["grid_patches"] and msg["grid_count"] == 4 and not msg["patches"]
        page = c.get("/api/samples").json()
        assert [s["id"] for s in page["samples"]] == [results.keys[i] for i in idx]
        assert [s["sample_id"] for s in page["samples"]] == [results.sample_ids[i] for i in idx]
        by_id = {d.id: d for s in boxes.exists("boxes") for d in s.boxes.detections}
        for tile in page["samples"]:
            assert [(b["id"], b["box"]) for b in tile["boxes"]] == [(tile["id"], by_id[tile["id"]].bounding_box)]
            assert tile["labels"][0]["label"] == by_id[tile["id"]].label
        # clicking objects of the grid selects those objects (and their samples)
        one, two = results.keys[idx[2]], results.keys[idx[3]]
        c.post("/api/selection", json={"ids": [one], "labels": True})
        assert [d["label_id"] for d in st.selected_labels] == [one] and st.selected == [results.sample_ids[idx[2]]]
        msg = c.post("/api/selection", json={"ids": [two], "labels": True, "mode": "toggle"}).json()
        assert [d["label_id"] for d in st.selected_labels] == [one, two]
        assert {t["id"] for t in c.get("/api/samples").json()["samples"] if t["selected"]} == {one, two}
        lit = np.frombuffer(c.post("/api/points/objects/indices", json={}).content, dtype="<u4")
        assert sorted(lit.tolist()) == sorted([int(idx[2]), int(idx[3])])
        assert c.post("/api/selection", json={"ids": [results.sample_ids[0]], "labels": True}).status_code == 404
        c.post("/api/points/objects/lasso", content=idx.tobytes(), headers=BIN)  # back to the lassoed four
        # tagging the selected objects writes their label tags
        assert c.post("/api/tag", json={"tags": ["odd-box"], "labels": True}).json()["tagged"] == 4
        tagged = boxes.to_patches("boxes").match_tags("odd-box").values("id")
        assert sorted(tagged) == sorted(results.keys[i] for i in idx)
        c.post("/api/untag", json={"tags": ["odd-box"], "labels": True})
        assert boxes.to_patches("boxes").match_tags("odd-box").values("id") == []
        # in a patches view of the same field, the grid shows exactly the lassoed objects
        st.set_view(boxes.to_patches("boxes"))
        page = c.get("/api/samples").json()
        assert sorted(s["id"] for s in page["samples"]) == sorted(results.keys[i] for i in idx)
        assert {s["sample_id"] for s in page["samples"]} == set(parents)
        s = c.get("/api/summary").json()
        assert s["count"] == 40 and s["patches"] and "other" in {v["value"] for v in s["labels"]["boxes"]["values"]}
        mask = np.frombuffer(c.get("/api/points/objects/mask").content, dtype=np.uint8)
        assert mask.sum() == 40


# ---------------------------------------------------------------------------------------------- selection, tags


def test_selecting_objects_needs_an_object_grid(client, digits):
    r = client.post("/api/selection", json={"ids": digits.values("id")[:1], "labels": True})
    assert r.status_code == 400 and "samples, not objects" in r.json()["detail"]


def test_selection_modes(client, state, digits):
    ids = digits.values("id")[:4]
    assert client.post("/api/selection", json={"ids": ids[:2]}).json() == {"selected_count": 2}
    client.post("/api/selection", json={"ids": [ids[2]], "mode": "add"})
    client.post("/api/selection", json={"ids": [ids[0]], "mode": "remove"})
    client.post("/api/selection", json={"ids": [ids[1], ids[3]], "mode": "toggle"})
    assert state.selected == [ids[2], ids[3]]
    assert client.get("/api/selection").json()["selected"] == [ids[2], ids[3]]
    pts = np.frombuffer(client.post("/api/points/pca/indices", json={"ids": ids[:2]}).content, dtype="<u4")
    keys = digits.load_brain_results("pca").keys
    assert sorted(keys[i] for i in pts) == sorted(ids[:2])
    for bad in ({"ids": ["nope"]}, {"ids": [ids[0]], "mode": "xor"}, {"ids": "abc"}, {"ids": [1, 2]}):
        r = client.post("/api/selection", json=bad)
        assert 400 <= r.status_code < 500, bad
    assert client.post("/api/selection", json={"ids": ["0" * 24]}).status_code == 404
    assert client.post("/api/selection", content=b"{not json", headers=JSON).status_code == 422
    assert state.selected == [ids[2], ids[3]]
    client.post("/api/selection/clear", json={})
    assert state.selected == []


def test_tagging_persists_to_sqlite(client, state, digits):
    ids = digits.values("id")[10:15]
    client.post("/api/selection", json={"ids": ids})
    r = client.post("/api/tag", json={"tags": ["t-app"]})
    assert r.status_code == 200 and r.json() == {"tagged": 5, "tags": ["t-app"]}
    tags = fresh_tags(digits, ids)
    assert all("t-app" in tags[i] for i in ids)
    assert el.load_dataset("digits").match_tags("t-app").values("id") == ids
    assert {t["tag"]: t["count"] for t in client.get("/api/summary").json()["tags"]}["t-app"] == 5
    # explicit ids, then untag
    other = digits.values("id")[20:22]
    assert client.post("/api/tag", json={"tags": ["t-ids"], "ids": other}).json()["tagged"] == 2
    assert client.post("/api/untag", json={"tags": ["t-app"]}).json() == {"untagged": 5, "tags": ["t-app"]}
    tags = fresh_tags(digits, ids + other)
    assert not any("t-app" in tags[i] for i in ids) and all("t-ids" in tags[i] for i in other)


@pytest.mark.parametrize("body,status", [
    ({"tags": []}, 422),
    ({}, 422),
    ({"tags": [""]}, 400),
    ({"tags": ["   "]}, 400),
    ({"tags": ["a\nb"]}, 400),
    ({"tags": ["x" * 200]}, 400),
    ({"tags": [3]}, 422),
    ({"tags": ["t-bad"], "ids": ["../../etc"]}, 400),
    ({"tags": ["t-bad"], "ids": ["0" * 24]}, 404),
    ({"tags": ["t-bad"], "ids": []}, 400),
    ({"tags": ["t-bad"]}, 400),  # nothing selected
    ({"tags": ["t-bad"], "labels": True}, 400),  # no objects selected
])
def test_bad_tag_requests_get_4xx_and_change_nothing(client, digits, body, status):
    r = client.post("/api/tag", json=body)
    assert r.status_code == status, r.text
    assert isinstance(r.json()["detail"], (str, list))
    assert digits.match_tags("t-bad").count() == 0
    assert client.get("/api/state").status_code == 200


# ---------------------------------------------------------------------------------------------- views


def test_view_stages_round_trip(client, state, digits):
    view = digits.match_tags("test").match(el.F("ground_truth.label").is_in(["3", "5"])).sort_by("index", reverse=True)
    r = client.post("/api/view", json={"stages": view.to_dicts()})
    assert r.status_code == 200 and r.json()["view"]["count"] == len(view)
    assert state.view == view
    assert client.get("/api/view").json() == {"stages": view.to_dicts(), "count": len(view)}
    page = client.get("/api/samples", params={"limit": 1000}).json()
    assert [s["id"] for s in page["samples"]] == view.values("id")
    assert client.get("/api/summary").json()["count"] == len(view)
    mask = np.frombuffer(client.get("/api/points/pca/mask").content, dtype=np.uint8)
    keys = np.array(digits.load_brain_results("pca").keys)
    assert set(keys[mask == 1]) == set(view.values("id"))
    # the page's own stage JSON (plain lists, no "$lit") is understood too
    r = client.post("/api/view", json={"stages": [
        {"_stage": "MatchTags", "kwargs": {"tags": ["test"], "bool": True, "all": False}},
        {"_stage": "Match", "kwargs": {"filter": {"$op": "is_in", "args": [{"$field": "ground_truth.label"},
                                                                             {"$lit": ["3"]}]}}},
    ]})
    assert r.json()["view"]["count"] == digits.match_tags("test").match(el.F("ground_truth.label") == "3").count()
    ids = digits.values("id")[:3][::-1]
    r = client.post("/api/view", json={"stages": digits.select(ids, ordered=True).to_dicts()})
    assert [s["id"] for s in client.get("/api/samples").json()["samples"]] == ids
    assert client.post("/api/view", json={"stages": []}).json()["view"]["count"] == 1797


@pytest.mark.parametrize("stages", [
    [{"_stage": "Nope", "kwargs": {}}],
    [{"_stage": "SortBy", "kwargs": {"field_or_expr": "no_such_field"}}],
    [{"_stage": "Limit", "kwargs": {"limit": -1}}],
    [{"_stage": "Match", "kwargs": {"filter": 3}}],
    [{"_stage": "Match", "kwargs": {"filter": {"$field": "ground_truth.label;drop"}}}],
    [{"kwargs": {}}],
    [{"_stage": "Limit"}],
    "not a list",
])
def test_bad_view_stages_get_4xx(client, state, digits, stages):
    r = client.post("/api/view", json={"stages": stages})
    assert 400 <= r.status_code < 500, r.text
    assert len(state.view) == 1797
    assert client.get("/api/samples", params={"limit": 1}).status_code == 200


def test_post_needs_a_json_or_binary_content_type(client):
    # Cross-site forms can only send text/plain or form encodings: those are refused.
    r = client.post("/api/tag", content=json.dumps({"tags": ["x"]}), headers={"content-type": "text/plain"})
    assert r.status_code == 415
    r = client.post("/api/view", data={"stages": "[]"})
    assert r.status_code == 415


def test_sort_by_similarity(client, state, digits):
    sim = pytest.importorskip("embedlens.brain.similarity")
    x = digits.compute_embeddings("pixels", progress=False)
    sim.compute_similarity(digits, embeddings=x, brain_key="app_sim", progress=False)
    try:
        assert client.get("/api/similarity_runs").json() == {"runs": ["app_sim"]}
        q = digits.values("id")[7]
        client.post("/api/selection", json={"ids": [q]})
        r = client.post("/api/sort_by_similarity", json={"k": 10, "brain_key": "app_sim"})
        assert r.status_code == 200 and r.json() == {"count": 10}
        page = client.get("/api/samples").json()["samples"]
        assert len(page) == 10 and page[0]["id"] == q
        assert client.get("/api/view").json()["stages"][-1]["_stage"] == "SortBySimilarity"
        client.post("/api/view", json={"stages": []})
        r = client.post("/api/sort_by_similarity", json={"k": 10, "brain_key": "app_sim", "reverse": True})
        far = digits.sort_by_similarity(q, k=10, reverse=True, brain_key="app_sim").values("id")
        assert [s["id"] for s in client.get("/api/samples").json()["samples"]] == far and q not in far
        assert client.post("/api/sort_by_similarity", json={"k": 0}).status_code == 422
        assert client.post("/api/sort_by_similarity", json={"brain_key": "nope"}).status_code == 400
        client.post("/api/selection/clear", json={})
        assert client.post("/api/sort_by_similarity", json={"k": 5}).status_code == 400
    finally:
        digits.delete_brain_run("app_sim")


@pytest.fixture(scope="module")
def scored(module_home, digits):
    """A copy of digits with a similarity index, uniqueness, predictions, mistakenness and hardness."""
    ds = digits.clone("digits-scored")
    originals = ds.limit(5)  # five exact copies, for the duplicates action to find
    ds.add_samples([el.Sample(fp, ground_truth=el.Classification(label=lab)) for fp, lab in
                    zip(originals.values("filepath"), originals.values("ground_truth.label"))])
    x = ds.compute_embeddings("pixels", progress=False)
    el.compute_similarity(ds, embeddings=x, brain_key="sim", progress=False)
    el.compute_uniqueness(ds, embeddings=x, progress=False)
    el.compute_predictions(ds, embeddings=x, progress=False)
    el.compute_mistakenness(ds, "predictions", progress=False)
    el.compute_hardness(ds, "predictions")
    return ds


@pytest.mark.parametrize("action, field", [("mistakes", "mistakenness"), ("unique", "uniqueness"),
                                           ("hardness", "hardness")])
def test_actions_show_the_top_scores(scored, action, field):
    st = AppState(scored.match_tags("test"))
    with TestClient(create_app(st)) as c:
        assert c.get("/api/summary").json()["actions"][action][-1] == field  # the default
        r = c.post("/api/action", json={"name": action, "count": 25})
        assert r.status_code == 200 and r.json() == {"action": action, "brain_key": field, "count": 25}
        want = scored.match_tags("test").sort_by(field, reverse=True).limit(25).values("id")
        assert [s["id"] for s in c.get("/api/samples").json()["samples"]] == want
        stages = c.get("/api/view").json()["stages"]
        assert [s["_stage"] for s in stages] == ["MatchTags", "SortBy", "Limit"]
        scores = scored.select(want, ordered=True).values(field)
        assert scores == sorted(scores, reverse=True)


def test_show_duplicates_and_unique_from_a_similarity_index(scored):
    from embedlens.brain.similarity import SimilarityIndex  # noqa: F401

    st = AppState(scored)
    with TestClient(create_app(st)) as c:
        assert c.get("/api/summary").json()["actions"]["duplicates"] == ["sim"]
        r = c.post("/api/action", json={"name": "duplicates"})
        index = scored.load_brain_results("sim")
        index.find_duplicates()
        want = index.duplicates_view().values("id")
        assert r.json()["count"] == len(want) >= 10
        page = c.get("/api/samples", params={"limit": 1000}).json()["samples"]
        assert [s["id"] for s in page] == want[:1000]
        r = c.post("/api/action", json={"name": "unique", "brain_key": "sim", "count": 7})
        index.find_unique(7)
        assert r.json()["count"] == 7
        assert [s["id"] for s in c.get("/api/samples").json()["samples"]] == index.unique_ids


def test_bad_actions_get_4xx(client, state, scored):
    assert client.post("/api/action", json={"name": "mistakes"}).status_code == 400  # digits has no runs
    assert "compute_mistakenness" in client.post("/api/action", json={"name": "mistakes"}).json()["detail"]
    assert client.post("/api/action", json={"name": "rm -rf"}).status_code == 422
    assert client.post("/api/action", json={"name": "unique", "count": 0}).status_code == 422
    with TestClient(create_app(AppState(scored))) as c:
        r = c.post("/api/action", json={"name": "mistakes", "brain_key": "sim"})
        assert r.status_code == 404 and "mistakenness" in r.json()["detail"]
        assert c.get("/api/state").json()["view"]["stages"] == []  # unchanged
    assert state.view is not None and len(state.view) == 1797


def test_switching_datasets(client, state, boxes):
    r = client.post("/api/dataset", json={"name": "boxes"})
    assert r.status_code == 200 and r.json()["dataset"] == "boxes" and state.dataset.name == "boxes"
    assert [x["key"] for x in client.get("/api/runs").json()["runs"]] == ["objects"]
    assert client.post("/api/dataset", json={"name": "nope"}).status_code == 404
    assert client.post("/api/dataset", json={"name": ""}).status_code == 422
    assert state.dataset.name == "boxes"


def test_no_dataset_yet(digits):
    with TestClient(create_app(AppState())) as c:
        assert c.get("/api/state").json()["dataset"] is None
        assert c.get("/api/summary").status_code == 404
        assert c.post("/api/dataset", json={"name": "digits"}).json()["dataset"] == "digits"
        assert c.get("/api/summary").status_code == 200


# ---------------------------------------------------------------------------------------------- security


def test_auth_token_is_enforced(state):
    app = create_app(state, auth_token="s3cret-token-value")
    with TestClient(app) as c:
        for path in ("/", "/api/state", "/api/points/pca", "/media/thumb/" + "0" * 24):
            assert c.get(path).status_code == 401, path
        assert c.get("/api/state", params={"token": "wrong"}).status_code == 401
        assert c.get("/api/state", headers={"x-embedlens-token": "s3cret-token-valuX"}).status_code == 401
        assert c.get("/api/state", headers={"x-embedlens-token": "s3cret-token-value"}).status_code == 200
        assert c.get("/api/state", headers={"authorization": "Bearer s3cret-token-value"}).status_code == 200
        assert c.post("/api/tag", json={"tags": ["x"]}).status_code == 401
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws"):
            pass
        with c.websocket_connect("/ws?token=s3cret-token-value") as ws:
            assert ws.receive_json()["type"] == "hello"
        # the page's first ?token= request sets a cookie, so its images and fetches carry the token
        r = c.get("/", params={"token": "s3cret-token-value"})
        assert r.status_code == 200 and "embedlens_token" in r.headers.get("set-cookie", "")
        assert c.get("/api/state").status_code == 200


def test_binding_beyond_loopback_requires_a_token(capsys):
    # The rule is checked without binding anywhere but the loopback interface.
    assert resolve_auth_token("127.0.0.1", None) is None
    assert resolve_auth_token("localhost", None) is None
    token = resolve_auth_token("0.0.0.0", None)
    assert token and len(token) >= 24 and token in capsys.readouterr().err
    assert resolve_auth_token("192.168.1.10", "my-long-token") == "my-long-token"
    with pytest.raises(ValueError, match="auth_token"):
        resolve_auth_token("0.0.0.0", "short")
    with pytest.raises(ValueError, match="auth_token"):
        Session(None, port=0, address="0.0.0.0", auto=False, auth_token="short")


def test_a_session_with_a_token_puts_it_in_its_url(digits):
    import httpx

    session = launch_app(digits, port=0, auto=False, auth_token="loopback-token-123")
    try:
        assert session.url.endswith("/?token=loopback-token-123")
        assert httpx.get(f"http://127.0.0.1:{session.port}/api/state").status_code == 401
        assert httpx.get(session.url).status_code == 200
    finally:
        session.close()


def test_trusted_hosts_stop_dns_rebinding(state):
    with TestClient(create_app(state, trusted_hosts=["127.0.0.1", "localhost", "testserver"]),
                    base_url="http://127.0.0.1") as c:
        assert c.get("/api/state").status_code == 200
        assert c.get("/api/state", headers={"host": "evil.example:5151"}).status_code == 400
        # a page of another site cannot listen to the live state either
        with pytest.raises(WebSocketDisconnect), c.websocket_connect("/ws", headers={"origin": "http://evil.example"}):
            pass
        with c.websocket_connect("/ws", headers={"origin": "http://127.0.0.1:5151"}) as ws:
            assert ws.receive_json()["type"] == "hello"


def test_a_reloaded_page_frees_its_old_slot(client, state, digits):
    """A reload is a new page (a new client id) and the old one closing. The closed page's slot stays while
    Python reads it (it changed last), and goes as soon as another page changes something; a request that
    arrives after its page closed keeps no slot."""
    ids = digits.values("id")[:5]
    with client.websocket_connect("/ws") as ws:
        old = ws.receive_json()["client_id"]
        client.post("/api/selection", json={"ids": ids}, headers=page_headers(old))
    assert state.selected_by == old and state.selected == ids  # Python still reads the closed page
    with client.websocket_connect("/ws") as ws:
        new = ws.receive_json()["client_id"]
        client.post("/api/selection", json={"ids": ids[:2]}, headers=page_headers(new))
        assert state.selected_by == new and state.selected == ids[:2]
        assert old not in state._slots
        # the old page's late request: answered, but it neither keeps a slot nor takes Python's reading
        assert client.post("/api/selection", json={"ids": ids}, headers=page_headers(old)).status_code == 200
        assert old not in state._slots and state.selected_by == new and state.selected == ids[:2]
    assert new in state._slots  # the page Python reads, closed last
    state.clear_selection()


def test_page_not_built_message(state, tmp_path):
    with TestClient(create_app(state, static_dir=tmp_path)) as c:
        r = c.get("/")
        assert r.status_code == 200 and "not built" in r.text
        assert c.get("/api/state").status_code == 200


# ---------------------------------------------------------------------------------------------- live


def test_websocket_pushes_python_changes(client, state, digits):
    with client.websocket_connect("/ws") as ws:
        hello = ws.receive_json()
        assert hello["type"] == "hello" and hello["client_id"] and hello["view"]["count"] == 1797
        state.set_view(digits.match_tags("test"), origin="python")
        msg = ws.receive_json()
        assert msg["reason"] == "view" and msg["origin"] == "python" and msg["view"]["count"] == 360
        ids = digits.values("id")[:2]
        r = client.post("/api/selection", json={"ids": ids}, headers={"x-embedlens-client": hello["client_id"]})
        assert r.status_code == 200
        msg = ws.receive_json()
        assert msg["reason"] == "selection" and msg["selected"] == ids and msg["origin"] == hello["client_id"]
        ws.send_json({"type": "ping"})
        assert ws.receive_json() == {"type": "pong"}


def test_live_session_on_a_free_port(digits):
    import httpx

    session = launch_app(digits, port=0, auto=False)
    try:
        assert session.port > 0 and session.url == f"http://127.0.0.1:{session.port}/"
        r = httpx.get(session.url)
        assert r.status_code == 200 and "embedlens" in r.text
        assert httpx.get(session.url + "api/state").json()["view"]["count"] == 1797
        # Python -> page
        session.view = digits.match_tags("test")
        assert httpx.get(session.url + "api/state").json()["grid_count"] == 360
        ids = digits.match_tags("test").values("id")[:3]
        session.selected = ids
        assert httpx.get(session.url + "api/selection").json()["selected"] == ids
        # page -> Python
        httpx.post(session.url + "api/selection", json={"ids": ids[:1]})
        assert session.selected == ids[:1]
        httpx.post(session.url + "api/tag", json={"tags": ["t-session"]})
        assert fresh_tags(digits, ids[:1])[ids[0]].count("t-session") == 1
        assert httpx.get(session.url + "api/samples", headers={"host": "evil.example"}).status_code == 400
        assert "running" in repr(session)
        session.view = None
        assert len(session.view) == 1797
        session.wait(timeout=0.1)
    finally:
        session.close()
        digits.untag_samples("t-session")
    assert session.closed
    with pytest.raises(httpx.HTTPError):
        httpx.get(session.url, timeout=2)


def test_the_app_command_serves_until_ctrl_c(digits, module_home):
    """`embedlens app DATASET` in a real process: one line with the URL, the API answers, Ctrl-C stops it."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    exe = Path(sys.executable).with_name("embedlens")
    proc = subprocess.Popen([str(exe), "app", "digits", "--port", "0", "--no-browser"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "EMBEDLENS_HOME": str(module_home)})
    try:
        line = proc.stdout.readline()  # printed once the server listens
        assert line.startswith("embedlens app on 'digits': http://127.0.0.1:") and "Ctrl-C" in line, line
        url = line.split(": ", 1)[1].split()[0]
        # a loaded machine may take a while to answer the first request: its timeout is not what is tested
        assert httpx.get(url + "api/state", timeout=60).json()["view"]["count"] == 1797
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert url not in out + err  # the URL is printed once
    with pytest.raises(httpx.HTTPError):
        httpx.get(url, timeout=2)


def test_port_in_use_is_a_clear_error(digits):
    first = launch_app(digits, port=0, auto=False)
    try:
        with pytest.raises(OSError, match="could not start"):
            launch_app(digits, port=first.port, auto=False)
    finally:
        first.close()


# ---------------------------------------------------------------------------------------------- tabs, legend, export


def page_headers(client_id: str, binary: bool = False) -> dict:
    return {"x-embedlens-client": client_id, **(BIN if binary else {})}


def test_each_tab_keeps_its_own_view_and_selection(client, state, digits):
    """Two pages (client ids): their lassos and views stay apart; Python sees the page that changed last
    and says which; Python's own changes reach both."""
    a, b = page_headers("tab-a", True), page_headers("tab-b", True)
    keys = np.asarray(digits.load_brain_results("pca").keys)
    first, second = np.arange(0, 40, dtype=np.uint32), np.arange(100, 110, dtype=np.uint32)
    assert client.post("/api/points/pca/lasso", content=first.tobytes(), headers=a).json()["grid_count"] == 40
    assert set(state.selected) == set(keys[first]) and state.selected_by == "tab-a"
    st = client.post("/api/points/pca/lasso", content=second.tobytes(), headers=b).json()
    assert st["grid_count"] == 10 and st["client"] == "tab-b" and st["selected_by"] == "tab-b"
    assert set(state.selected) == set(keys[second])
    # each page still reads its own
    assert client.get("/api/state", headers=page_headers("tab-a")).json()["selected_count"] == 40
    assert client.get("/api/samples", headers=page_headers("tab-b")).json()["total"] == 10
    # a view set by one tab stays in that tab; a new tab starts from Python's view
    client.post("/api/view", json={"stages": digits.match_tags("test").to_dicts()}, headers=page_headers("tab-a"))
    assert client.get("/api/state", headers=page_headers("tab-a")).json()["view"]["count"] == 360
    assert client.get("/api/state", headers=page_headers("tab-b")).json()["view"]["count"] == 1797
    assert client.get("/api/state", headers=page_headers("tab-new")).json()["view"]["count"] == 1797
    # Python's selection reaches every tab
    ids = digits.values("id")[:3]
    state.set_selected(ids, origin="python")
    for tab in ("tab-a", "tab-b"):
        assert client.get("/api/selection", headers=page_headers(tab)).json()["selected"] == ids


def test_the_legend_narrows_the_grid(client, state, digits):
    """POST /api/points/{key}/shown: the grid keeps to the legend's classes, with or without a lasso."""
    labels = np.asarray(digits.load_brain_results("pca").values("ground_truth.label"))
    n = len(labels)
    only7 = np.packbits(labels == "7", bitorder="little").tobytes()
    h = page_headers("tab-l", True)
    st = client.post("/api/points/pca/shown", content=only7, headers=h).json()
    assert st["grid_count"] == int((labels == "7").sum()) and st["legend_filter"] and st["selected_count"] == 0
    # a lasso of zeros with 7 isolated: nothing in the grid, the selection is still the zeros
    zeros = np.flatnonzero(labels == "0").astype(np.uint32)
    st = client.post("/api/points/pca/lasso", content=zeros.tobytes(), headers=h).json()
    assert st["grid_count"] == 0 and st["selected_count"] == len(zeros)
    both = np.packbits(np.isin(labels, ["0", "7"]), bitorder="little").tobytes()
    st = client.post("/api/points/pca/shown", content=both, headers=h).json()
    assert st["grid_count"] == len(zeros)
    st = client.post("/api/points/pca/shown", content=b"", headers=h).json()
    assert st["grid_count"] == len(zeros) and not st["legend_filter"]
    assert client.post("/api/points/pca/shown", content=b"\x01", headers=h).status_code == 400
    assert client.post("/api/points/nope/shown", content=only7, headers=h).status_code == 404
    assert n == 1797


def test_export_csv_save_view_and_point_lookup(client, state, digits):
    results = digits.load_brain_results("pca")
    assert client.get("/api/points/pca/point/5").json() == {"index": 5, "id": results.keys[5],
                                                             "sample_id": results.sample_ids[5]}
    assert client.get("/api/points/pca/point/1797").status_code == 404
    assert client.get("/api/export.csv", params={"what": "selection"}).status_code == 400  # nothing selected
    ids = digits.values("id")[10:14]
    client.post("/api/selection", json={"ids": ids})
    r = client.get("/api/export.csv", params={"what": "selection"})
    assert r.headers["content-type"].startswith("text/csv") and "attachment" in r.headers["content-disposition"]
    rows = list(csv.DictReader(io.StringIO(r.text)))
    want = digits.select(ids, ordered=True)
    assert [row["id"] for row in rows] == ids and [row["filepath"] for row in rows] == want.values("filepath")
    assert [row["ground_truth"] for row in rows] == want.values("ground_truth.label")
    assert len(client.get("/api/export.csv", params={"what": "view"}).text.strip().splitlines()) == 1798
    assert client.get("/api/export.csv", params={"what": "everything"}).status_code == 422
    r = client.post("/api/save_view", json={"name": "four", "what": "selection"})
    assert r.json() == {"name": "four", "count": 4}
    assert el.load_dataset("digits").load_saved_view("four").values("id") == ids
    assert client.post("/api/save_view", json={"name": "four", "what": "selection"}).status_code == 400
    digits.delete_saved_view("four")


def test_tiles_show_what_ranked_them(client, state, digits):
    view = digits.sort_by("index", reverse=True)
    client.post("/api/view", json={"stages": view.to_dicts()})
    tiles = client.get("/api/samples", params={"limit": 3}).json()["samples"]
    assert [t["score"] for t in tiles] == [{"field": "index", "value": v} for v in view.limit(3).values("index")]
    client.post("/api/view", json={"stages": []})
    assert client.get("/api/samples", params={"limit": 1}).json()["samples"][0]["score"] is None


class CallbackPlot:
    """A minimal linked plot of the protocol: ids, selected_ids, and a selection callback."""

    def __init__(self, ids):
        self.ids = list(ids)
        self.selected_ids: list[str] = []
        self.callbacks = []

    def register_selection_callback(self, callback):
        self.callbacks.append(callback)

    def user_selects(self, ids):
        self.selected_ids = list(ids)
        for cb in self.callbacks:
            cb(list(ids))


def test_session_plots_attach_links_a_plot_both_ways(digits):
    import httpx

    results = digits.load_brain_results("pca")
    session = launch_app(digits, port=0, auto=False)
    try:
        plot = results.visualize(labels="ground_truth.label")
        assert session.plots.attach(plot) == "plot1" and "plot1" in session.plots
        # the page lassos ten points: the plot shows them
        idx = np.arange(20, 30, dtype=np.uint32)
        httpx.post(session.url + "api/points/pca/lasso", content=idx.tobytes(),
                   headers={"content-type": "application/octet-stream", "x-embedlens-client": "tab-1"})
        want = {results.keys[i] for i in idx}
        assert set(plot.selected_ids) == want
        selected_points = [i for t in plot.figure.data for i in (t.selectedpoints or [])]
        assert len(selected_points) == 10
        # the plot's selection reaches the app (no callback: sync)
        plot.selected_ids = plot.ids[:3]
        session.plots.sync()
        assert session.selected == plot.ids[:3]
        assert httpx.get(session.url + "api/state", headers={"x-embedlens-client": "tab-1"}).json()[
            "selected_count"] == 3
        # a plot with a callback follows at once, both ways
        other = CallbackPlot(results.keys[:50])
        name = session.plots.attach(other, "mine")
        assert name == "mine" and set(other.selected_ids) == set(plot.ids[:3]) & set(other.ids)
        other.user_selects(other.ids[5:8])
        assert session.selected == other.ids[5:8] and set(plot.selected_ids) == set(other.ids[5:8])
        with pytest.raises(el.core.errors.InvalidInputError):
            session.plots.attach(other, "mine")
        with pytest.raises(el.core.errors.WrongTypeError):
            session.plots.attach(object())
        assert session.plots.pop("mine") is other and session.plots.keys() == ["plot1"]
    finally:
        session.close()


# ---------------------------------------------------------------------------------------------- the grid by point


def test_rows_of_points_are_the_grid_tiles_of_those_points_in_order(client, state, digits):
    """POST /api/points/{key}/rows: the tiles of the given points, in the order asked, the same tiles the
    server's grid gives for them; at most 1000 points; bad bodies 4xx; the selection untouched."""
    results = digits.load_brain_results("pca")
    idx = np.array([17, 3, 1500, 42], dtype="<u4")
    r = client.post("/api/points/pca/rows", content=idx.tobytes(), headers=BIN)
    assert r.status_code == 200
    tiles = r.json()["samples"]
    assert [t["id"] for t in tiles] == [results.sample_ids[i] for i in idx]
    same = {t["id"]: t for t in client.get("/api/samples", params={"limit": 1000}).json()["samples"]}
    same.update({t["id"]: t for t in client.get("/api/samples", params={"offset": 1000, "limit": 1000})
                 .json()["samples"]})
    assert tiles == [same[t["id"]] for t in tiles]
    assert tiles[0]["labels"][0]["label"] == digits[tiles[0]["id"]].ground_truth.label
    assert state.selected == [] and state.lasso is None  # a read: the selection comes by the lasso route
    assert client.post("/api/points/pca/rows", content=b"", headers=BIN).json()["samples"] == []
    too_many = np.arange(1001, dtype="<u4").tobytes()
    for body, status in ((b"abc", 400), (np.array([1797], "<u4").tobytes(), 400), (too_many, 400)):
        assert client.post("/api/points/pca/rows", content=body, headers=BIN).status_code == status
    assert client.post("/api/points/nope/rows", content=idx.tobytes(), headers=BIN).status_code == 404
    assert client.post("/api/points/pca/rows", content=idx.tobytes(),
                       headers={"content-type": "text/plain"}).status_code == 415
    # with a selection, exactly the selected points' tiles are marked (a shortcut in the route's lookup)
    chosen = np.array([3, 42, 900], dtype="<u4")
    assert client.post("/api/points/pca/lasso", content=chosen.tobytes(), headers=BIN).status_code == 200
    flags = [t["selected"] for t in client.post("/api/points/pca/rows", content=idx.tobytes(),
                                                headers=BIN).json()["samples"]]
    assert flags == [i in set(chosen.tolist()) for i in idx.tolist()]
    client.post("/api/selection/clear", json={})
    assert state.selected == []


def test_rows_of_object_points_are_object_tiles(boxes):
    st = AppState(boxes)
    with TestClient(create_app(st)) as c:
        results = boxes.load_brain_results("objects")
        idx = np.array([5, 0, 2], dtype="<u4")
        tiles = c.post("/api/points/objects/rows", content=idx.tobytes(), headers=BIN).json()["samples"]
        assert [t["id"] for t in tiles] == [results.keys[i] for i in idx]
        assert [t["sample_id"] for t in tiles] == [results.sample_ids[i] for i in idx]
        assert all(len(t["boxes"]) == 1 and t["boxes"][0]["id"] == t["id"] for t in tiles)


def test_lasso_counts_without_a_scan_match_the_grid(client, state, digits):
    """The grid count of a lasso over the whole dataset is the lasso's own (no table scan); with a view
    or a legend filter it is still len(grid_view())."""
    idx = np.arange(0, 1797, 7, dtype="<u4")
    st = client.post("/api/points/pca/lasso", content=idx.tobytes(), headers=BIN).json()
    assert st["grid_count"] == len(idx) == len(state.grid_view()) and st["ordered"] is False
    client.post("/api/view", json={"stages": digits.match_tags("test").to_dicts()})
    st = client.post("/api/points/pca/lasso", content=idx.tobytes(), headers=BIN).json()
    assert st["grid_count"] == len(state.grid_view()) < len(idx)
    client.post("/api/view", json={"stages": digits.sort_by("index").to_dicts()})
    assert client.get("/api/state").json()["ordered"] is True
    client.post("/api/view", json={"stages": []})


# ---------------------------------------------------------------------------------------------- export and clone


def test_export_parquet_holds_what_python_reads(client, state, digits):
    """GET /api/export.parquet: ids, filepaths, tags and the sidebar's fields of the selection (or the
    grid), re-read with pyarrow and compared with Python's values of the same samples."""
    import pyarrow.parquet as pq

    assert client.get("/api/export.parquet", params={"what": "selection"}).status_code == 400  # nothing selected
    ids = digits.values("id")[200:207][::-1]
    client.post("/api/selection", json={"ids": ids})
    r = client.get("/api/export.parquet", params={"what": "selection"})
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    assert r.headers["content-disposition"].endswith('digits-selection.parquet"')
    table = pq.read_table(io.BytesIO(r.content)).to_pydict()
    want = digits.select(ids, ordered=True)
    assert table["id"] == ids and table["filepath"] == want.values("filepath")
    assert table["tags"] == want.values("tags")
    assert table["ground_truth"] == want.values("ground_truth.label")
    assert table["index"] == want.values("index")
    # the grid: the whole view, or what a view keeps
    client.post("/api/view", json={"stages": digits.match_tags("test").to_dicts()})
    table = pq.read_table(io.BytesIO(client.get("/api/export.parquet", params={"what": "view"}).content))
    assert table.column("id").to_pylist() == digits.match_tags("test").values("id")
    client.post("/api/view", json={"stages": []})
    assert client.get("/api/export.parquet", params={"what": "all"}).status_code == 422


def test_export_parquet_of_objects_lists_their_samples(boxes):
    import pyarrow.parquet as pq

    st = AppState(boxes)
    with TestClient(create_app(st)) as c:
        st.set_view(boxes.to_patches("boxes"))
        table = pq.read_table(io.BytesIO(c.get("/api/export.parquet", params={"what": "view"}).content)).to_pydict()
        patches = boxes.to_patches("boxes")
        assert table["id"] == patches.values("id") and table["sample_id"] == patches.values("sample_id")
        assert table["boxes"] == patches.values("boxes.label")
        st.set_view(None)
        table = pq.read_table(io.BytesIO(c.get("/api/export.parquet", params={"what": "view"}).content)).to_pydict()
        assert table["boxes.labels"] == [v or [] for v in boxes.values("boxes.detections.label")]
        assert table["score"] == boxes.values("score")


def test_downloads_hold_the_columns_of_a_table_export(client, state, digits, tmp_path):
    """The page's CSV and Parquet of the grid are the files ``export(path, "csv")`` writes for the same
    view (one column policy), and they import back with their labels."""
    view = digits.match_tags("test")
    client.post("/api/view", json={"stages": view.to_dicts()})
    for fmt in ("csv", "parquet"):
        got = client.get(f"/api/export.{fmt}", params={"what": "view"}).content
        view.export(tmp_path / f"t.{fmt}", "csv")
        assert got == (tmp_path / f"t.{fmt}").read_bytes(), fmt
        (tmp_path / f"page.{fmt}").write_bytes(got)
        back = el.Dataset(f"back-{fmt}")
        back.add_dir(tmp_path / f"page.{fmt}", "csv", label_columns=["ground_truth"], progress=False)
        assert back.values("filepath") == view.values("filepath")
        assert back.values("ground_truth.label") == view.values("ground_truth.label")
        assert back.values("tags") == view.values("tags")
        el.delete_dataset(back.name)
    client.post("/api/view", json={"stages": []})


def test_clone_the_selection_or_the_grid_into_a_new_dataset(client, state, digits):
    """POST /api/clone: a new dataset with the selected samples (or the grid's), their fields and tags, in
    SQLite; a name in use -> 409 naming it, an invalid name -> 400, nothing created."""
    ids = digits.values("id")[30:35]
    client.post("/api/selection", json={"ids": ids})
    try:
        r = client.post("/api/clone", json={"name": "digits-five", "what": "selection"})
        assert r.status_code == 200 and r.json() == {"name": "digits-five", "count": 5, "what": "selection"}
        five = el.load_dataset("digits-five")
        assert sorted(five.values("id")) == sorted(ids)
        assert five.select(ids, ordered=True).values("ground_truth.label") == \
            digits.select(ids, ordered=True).values("ground_truth.label")
        assert client.get("/api/datasets").json()["datasets"].count("digits-five") == 1
        r = client.post("/api/clone", json={"name": "digits-five", "what": "view"})
        assert r.status_code == 409 and "digits-five" in r.json()["detail"]
        assert len(el.load_dataset("digits-five")) == 5  # untouched
        for bad in ("../up", "a b", "", "x" * 200):
            assert client.post("/api/clone", json={"name": bad}).status_code in (400, 422)
        assert "up" not in client.get("/api/datasets").json()["datasets"]
        client.post("/api/view", json={"stages": digits.match_tags("test").to_dicts()})
        r = client.post("/api/clone", json={"name": "digits-test", "what": "view"}).json()
        assert r["count"] == 360 and sorted(el.load_dataset("digits-test").values("id")) == \
            sorted(digits.match_tags("test").values("id"))
        client.post("/api/selection/clear", json={})
        assert client.post("/api/clone", json={"name": "digits-none", "what": "selection"}).status_code == 400
    finally:
        client.post("/api/view", json={"stages": []})
        for name in ("digits-five", "digits-test"):
            if name in el.list_datasets():
                el.load_dataset(name).delete()


# ---------------------------------------------------------------------------------------------- train vs production


@pytest.fixture(scope="module")
def split(module_home, digits):
    """A copy of the digits whose "test" samples are compared with its "train" samples (brain key "cmp"),
    with a PCA layout of every sample under "pca"."""
    ds = digits.clone("digits-split")
    compute_visualization(ds, model="pixels", method="pca", brain_key="pca", seed=0, progress=False)
    res = el.compare_datasets(ds.match_tags("train"), ds.match_tags("test"), model="pixels", brain_key="cmp",
                              progress=False)
    return ds, res


def test_colour_by_split_novelty_and_compare_clusters(split):
    """The plot can be coloured by the samples' tags (the split), by the comparison's novelty (numbers,
    missing for the reference) and by its clusters, each cluster named with its reference/target shares."""
    ds, res = split
    st = AppState(ds)
    with TestClient(create_app(st)) as c:
        fields = c.get("/api/points/pca/meta").json()["color_fields"]
        assert {"path": "tags", "kind": "categorical"} in fields
        assert {"path": "cmp_novelty", "kind": "numeric"} in fields
        assert {"path": "cmp cluster", "kind": "categorical"} in fields
        assert fields[0]["path"] == "ground_truth.label"  # the default colour stays the labels
        sample_ids = ds.load_brain_results("pca").sample_ids
        tags = dict(zip(ds.values("id"), ds.values("tags")))

        def decode(path):
            h = c.get("/api/points/pca/values", params={"field": path}).json()
            raw = c.get("/api/points/pca/values.bin", params={"field": path}).content
            return h, np.frombuffer(raw, dtype=h["dtype"])

        h, codes = decode("tags")
        assert sorted(h["categories"]) == ["test", "train"]
        assert [h["categories"][k] for k in codes] == [", ".join(tags[i]) for i in sample_ids]
        h, novelty = decode("cmp_novelty")
        by_id = dict(zip(res.keys, np.asarray(res.novelty, np.float32)))
        assert h["kind"] == "numeric" and h["missing"] == 1437  # the reference has no novelty
        want = np.array([by_id.get(i, np.nan) for i in sample_ids], np.float32)
        np.testing.assert_array_equal(novelty, want)
        h, codes = decode("cmp cluster")
        assert h["missing"] == 0 and len(h["categories"]) == len(res.clusters)
        cluster_of = dict(zip(res.keys, res.target_clusters.tolist()))
        cluster_of.update(zip(res.reference_ids, res.reference_clusters.tolist()))
        shares = {cl["cluster"]: cl for cl in res.clusters}
        for k in range(0, len(sample_ids), 97):
            name = h["categories"][codes[k]]
            cl = shares[cluster_of[sample_ids[k]]]
            assert name.startswith(f"cluster {cl['cluster']:02d} · ref {cl['reference_share']:.1%} · "
                                   f"target {cl['target_share']:.1%}")
        assert c.get("/api/points/pca/values", params={"field": "nope cluster"}).status_code == 400


def test_most_novel_action_shows_the_comparison_top(split):
    """Show > Most novel: the view is the comparison's top(n), its stage named by the action, each tile
    with its novelty; without a comparison run the action is refused with the method to run."""
    ds, res = split
    st = AppState(ds)
    with TestClient(create_app(st)) as c:
        assert c.get("/api/summary").json()["actions"]["novelty"] == ["cmp"]
        r = c.post("/api/action", json={"name": "novelty", "count": 25})
        assert r.status_code == 200 and r.json() == {"action": "novelty", "brain_key": "cmp", "count": 25}
        msg = c.get("/api/state").json()
        assert msg["action"] == {"name": "novelty", "brain_key": "cmp"} and msg["ordered"]
        want = res.top(25).values("id")
        tiles = c.get("/api/samples", params={"limit": 100}).json()["samples"]
        assert [t["id"] for t in tiles] == want
        by_id = dict(zip(res.keys, np.asarray(res.novelty, float).tolist()))
        assert [t["score"] for t in tiles] == [{"field": "cmp_novelty", "value": by_id[i]} for i in want]
        assert c.post("/api/action", json={"name": "novelty", "brain_key": "pca"}).status_code == 404
        assert c.post("/api/action", json={"name": "novelty", "count": 0}).status_code == 422
    with TestClient(create_app(AppState(el.load_dataset("digits")))) as c:
        r = c.post("/api/action", json={"name": "novelty"})
        assert r.status_code == 400 and "compare_datasets" in r.json()["detail"]


def test_each_tab_keeps_its_own_dataset_and_images_of_both_are_served(client, state, digits, boxes):
    """POST /api/dataset from one page switches that page only; the other keeps its dataset, view and
    runs; Python reads the page that changed last; images of either dataset are served (an <img> sends
    no page header)."""
    a, b = page_headers("tab-da"), page_headers("tab-db")
    assert client.get("/api/state", headers=a).json()["dataset"] == "digits"
    assert client.post("/api/dataset", json={"name": "boxes"}, headers=b).json()["dataset"] == "boxes"
    assert client.get("/api/state", headers=a).json()["dataset"] == "digits"
    assert client.get("/api/datasets", headers=a).json()["current"] == "digits"
    assert client.get("/api/datasets", headers=b).json()["current"] == "boxes"
    assert client.get("/api/samples", headers=a).json()["total"] == 1797
    assert client.get("/api/samples", headers=b).json()["total"] == len(boxes)
    assert [r["key"] for r in client.get("/api/runs", headers=a).json()["runs"]] == ["pca"]
    assert [r["key"] for r in client.get("/api/runs", headers=b).json()["runs"]] == ["objects"]
    assert state.dataset.name == "boxes" and state.selected_by == "tab-db"
    for sid in (digits.first().id, boxes.first().id):
        assert client.get(f"/media/thumb/{sid}").status_code == 200
    # Python's own switch reaches every page
    state.set_dataset("digits")
    assert client.get("/api/state", headers=b).json()["dataset"] == "digits"

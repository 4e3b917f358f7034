"""compare_datasets on real MNIST digits: shifted copies written as PNGs, a class missing from the reference, a
change of class balance only, random splits that must read "no shift", two datasets, the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from sklearn.decomposition import PCA
from sklearn.metrics import roc_auc_score

import embedlens as el
from embedlens.cli import app

pytestmark = pytest.mark.usefixtures("in_module_home")

KINDS = ("rotated", "inverted", "noisy")


def shifted(img: np.ndarray, kind: str, rng: np.random.Generator) -> np.ndarray:
    if kind == "rotated":
        return np.rot90(img).copy()
    if kind == "inverted":
        return 255 - img
    return np.clip(img.astype(np.int16) + rng.normal(0, 100, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def mnist(module_home):
    """MNIST (4,000 train, 1,000 test) plus "production": 300 test digits as they are and 300 other test
    digits rotated, inverted or noisy (100 each, new PNG files); pixel embeddings stored as "px"."""
    ds = el.load_sample_dataset("mnist", progress=False)
    test = ds.match_tags("test")
    ids, paths, labels = test.values("id"), test.values("filepath"), test.values("ground_truth.label")
    rng = np.random.default_rng(0)
    order = rng.permutation(len(ids))
    ds.select([ids[i] for i in order[:300]]).tag_samples("production")
    out = module_home / "shifted"
    out.mkdir()
    new = []
    for j, i in enumerate(order[300:600]):
        kind = KINDS[j % 3]
        src = Image.open(paths[i])
        path = out / f"{kind}_{j:03d}.png"
        Image.fromarray(shifted(np.asarray(src), kind, rng), mode=src.mode).save(path)
        new.append(el.Sample(str(path), tags=["production", "shifted", kind],
                             ground_truth=el.Classification(labels[i])))
    ds.add_samples(new)
    ds.compute_embeddings("pixels", embeddings_field="px", progress=False)
    return ds


def _auroc(res, positive_ids) -> float:
    pos = set(positive_ids)
    return roc_auc_score([i in pos for i in res.keys], res.novelty)


def test_shifted_digits_are_novel_and_the_shift_is_found(mnist):
    ds = mnist
    train, prod = ds.match_tags("train"), ds.match_tags("production")
    res = el.compare_datasets(train, prod, model="pixels", brain_key="prod")
    assert res.config["embeddings_field"] == "px"  # the stored set of the model, by the one policy
    for kind in KINDS:
        kind_ids = ds.match_tags(kind).values("id")
        clean = set(prod.match_tags("shifted", bool=False).values("id"))
        sub = [i for i, k in enumerate(res.keys) if k in clean or k in set(kind_ids)]
        auc = roc_auc_score([res.keys[i] not in clean for i in sub], res.novelty[sub])
        assert auc >= 0.95, (kind, auc)
    assert res.shift["shift"] and res.shift["p_value"] < 0.01 and res.shift["effect"] > 0.1
    # the fields: novelty on the target, coverage on the reference (same dataset), nothing elsewhere
    nov = dict(zip(ds.values("id"), ds.values("prod_novelty")))
    cov = dict(zip(ds.values("id"), ds.values("prod_coverage")))
    assert all(0 <= nov[i] < 1 for i in prod.values("id")) and all(cov[i] is None for i in prod.values("id"))
    assert all(0 < cov[i] <= 1 for i in train.values("id")) and all(nov[i] is None for i in train.values("id"))
    assert ds.get_brain_info("prod")["fields"] == ["prod_novelty", "prod_coverage"]
    # top(n): the most novel first, nearly all of them shifted
    top = res.top(100)
    assert len(set(top.values("id")) & set(ds.match_tags("shifted").values("id"))) >= 95
    # where: over-represented clusters are the shifted digits
    over = [c for c in res.clusters if c["shift"] == "over"]
    assert over
    shifted_ids = set(ds.match_tags("shifted").values("id"))
    examples = [i for c in over for i in c["example_target_ids"]]  # the most novel of each cluster
    assert sum(i in shifted_ids for i in examples) >= 0.9 * len(examples)
    for c in over:
        members = res.cluster_view(c["cluster"]).values("id")
        assert set(members) <= set(prod.values("id")) and len(members) == c["target_count"]
        assert sum(i in shifted_ids for i in members) > 0.5 * len(members)
    # the same results after a reload
    again = ds.load_brain_results("prod")
    assert again.shift == res.shift and again.clusters == res.clusters
    assert again.top(10).values("id") == res.top(10).values("id")
    assert again.uncovered(5).values("id") == res.uncovered(5).values("id")
    assert set(again.uncovered(5).values("id")) <= set(train.values("id"))
    ds.delete_brain_run("prod")
    assert "prod_novelty" not in ds.get_field_schema() and "prod_coverage" not in ds.get_field_schema()


def test_novel_samples_scattered_one_by_one_read_as_a_shift(mnist):
    """Noisy digits are far from everything, so their nearest neighbours are still mostly reference
    digits and the kNN two-sample test alone misses them (p_knn 0.68 in bench_compare); the novelty tail
    test does not."""
    ds = mnist
    target = ds.match_tags("production").match_tags(["rotated", "inverted"], bool=False)
    res = el.compare_datasets(ds.match_tags("train"), target, embeddings="px", brain_key="noisy")
    assert res.shift["p_novelty"] < 0.001 and res.shift["shift"]
    tail = res.shift["novelty_tail"]
    assert tail["target_in_top"] > 3 * tail["expected"]


@pytest.fixture(scope="module")
def small(mnist):
    """1,000 train digits and 50-d PCA of their pixels, as an explicit array (fast random splits)."""
    view = mnist.match_tags("train").take(1000, seed=3)
    x = PCA(50, random_state=0).fit_transform(np.asarray(view.get_embeddings("px"), np.float64))
    return view.values("id"), x.astype(np.float32)


def test_random_splits_read_no_shift(mnist, small):
    ids, x = small
    claims, high = 0, []
    for seed in range(20):
        perm = np.random.default_rng(seed).permutation(len(ids))
        a, b = perm[:500], perm[500:]
        res = el.compare_datasets(mnist.select([ids[i] for i in a], ordered=True),
                                  mnist.select([ids[i] for i in b], ordered=True),
                                  embeddings=(x[a], x[b]), brain_key="split", overwrite=True, n_permutations=200)
        claims += res.shift["shift"]
        high.append(float((res.novelty >= 0.9).mean()))
        assert not any(c["shift"] != "same" for c in res.clusters) or claims <= 1
    assert claims <= 1  # <= 5% of 20 random splits
    # novelty is calibrated: without a shift about 10% of the target is above 0.9
    assert 0.06 <= np.mean(high) <= 0.14, np.mean(high)


def test_a_class_missing_from_the_reference_is_novel(mnist):
    ds = mnist
    train = ds.match_tags("train").match(el.F("ground_truth.label") != "7")
    test = ds.match_tags("test")
    res = el.compare_datasets(train, test, embeddings="px", brain_key="new_class")
    sevens = test.match(el.F("ground_truth.label") == "7").values("id")
    # raw pixels: 7s look like 1s and 9s, so the distance alone reads them as barely novel (AUROC ~0.85, the
    # novelty before channels); the local ratio and the perceptual channel see them (the bench has the default model)
    assert _auroc(res, sevens) >= 0.93
    distance_only = roc_auc_score([i in set(sevens) for i in res.keys], res.novelty_distance)
    assert _auroc(res, sevens) >= distance_only + 0.05
    assert res.config["channels"]["used"] == ["embedding", "perceptual"]
    assert res.shift["shift"]
    over = [c for c in res.clusters if c["shift"] == "over"]
    top_over = max(over, key=lambda c: c["target_share"] - c["reference_share"])
    labels = dict(zip(test.values("id"), test.values("ground_truth.label")))
    assert sum(labels[i] == "7" for i in top_over["example_target_ids"]) >= 4
    assert top_over["target_share"] >= 2 * top_over["reference_share"]


def test_a_change_of_class_balance_only_shows_in_the_clusters_not_in_novelty(mnist):
    ds = mnist
    test = ds.match_tags("test")
    labels = test.values("ground_truth.label")
    ids = test.values("id")
    keep = [i for i, lab in zip(ids, labels) if lab in ("0", "1")] + \
        [i for i, lab in zip(ids, labels) if lab not in ("0", "1")][::16]
    target = ds.select(keep)
    res = el.compare_datasets(ds.match_tags("train"), target, embeddings="px", brain_key="balance")
    assert res.summary()["novel_fraction"] <= 0.05 and float(np.mean(res.novelty)) < 0.65
    assert res.shift["shift"]
    by_id = dict(zip(ds.values("id"), ds.values("ground_truth.label")))
    over = [c for c in res.clusters if c["shift"] == "over"]
    under = [c for c in res.clusters if c["shift"] == "under"]
    assert over and under
    for c in over:  # the clusters of 0s and 1s
        members = res.cluster_view(c["cluster"], "reference").values("id")
        assert sum(by_id[i] in ("0", "1") for i in members) >= 0.8 * len(members), c
    for c in under:  # the other digits
        members = res.cluster_view(c["cluster"], "reference").values("id")
        assert sum(by_id[i] in ("0", "1") for i in members) <= 0.2 * len(members), c


def test_two_datasets_with_the_same_model_and_different_models_refused(mnist):
    ref = mnist.match_tags("train").take(1500, seed=1).clone("mnist_train_copy")  # keeps the "px" rows
    target = mnist.match_tags("production")
    res = el.compare_datasets("mnist_train_copy", target, embeddings="px", brain_key="other")
    assert res.config["reference"] == {"dataset": "mnist_train_copy", "stages": [], "same_dataset": False,
                                       "count": 1500}
    assert "other" in mnist.list_brain_runs() and "other" not in ref.list_brain_runs()
    assert res.coverage_field is None and "other_coverage" not in ref.get_field_schema()
    assert set(res.uncovered(5).values("id")) <= set(ref.values("id"))
    assert res.shift["shift"]
    # the same set name made by another model: refused before any work, nothing written
    other = ref.take(300, seed=0).clone("mnist_other_model")
    other.delete_embeddings("px")
    dim = ref.get_embeddings_info("px")["dim"]
    other.set_embeddings("px", np.random.default_rng(0).normal(size=(300, dim)).astype(np.float32),
                         model_name="other-model")
    with pytest.raises(el.InvalidInputError, match="different models"):
        el.compare_datasets(other, target, embeddings="px", brain_key="mixed")
    assert "mixed" not in mnist.list_brain_runs() and "mixed_novelty" not in mnist.get_field_schema()


def test_bad_input_is_refused_before_any_work(mnist):
    train = mnist.match_tags("train")
    with pytest.raises(el.InvalidInputError, match="share 4000 samples"):
        el.compare_datasets(train, mnist, embeddings="px", brain_key="bad")
    with pytest.raises(el.InvalidInputError, match="pair"):
        el.compare_datasets(train, mnist.match_tags("test"), embeddings=np.zeros((1000, 3), np.float32))
    with pytest.raises(el.InvalidInputError, match="k must be"):
        el.compare_datasets(train, mnist.match_tags("test"), embeddings="px", k=0)
    with pytest.raises(el.InvalidInputError, match="no embeddings 'nope' in dataset 'mnist'"):
        el.compare_datasets(train, mnist.match_tags("test"), embeddings="px", reference_embeddings="nope",
                            brain_key="bad")
    with pytest.raises(el.InvalidInputError, match="reference must be"):
        el.compare_datasets(3, mnist.match_tags("test"), embeddings="px")
    assert "bad" not in mnist.list_brain_runs() and "bad_novelty" not in mnist.get_field_schema()


def test_cli_report_and_json(mnist):
    from typer.testing import CliRunner

    def run(*args):
        return CliRunner().invoke(app, list(args), prog_name="embedlens")

    out = run("compare", mnist.name, "--reference", "tag:train", "--target", "tag:production", "--embeddings",
              "px", "--brain-key", "cli", "--json")
    assert out.exit_code == 0, out.output
    report = json.loads(out.stdout)
    assert report["shift"]["shift"] and report["novelty_field"] == "cli_novelty"
    assert len(report["most_novel"]) == 5 and all(r["novelty"] > 0.9 for r in report["most_novel"])
    out = run("compare", mnist.name, "--reference", "tag:train", "--target", "tag:production", "--embeddings",
              "px", "--brain-key", "cli", "--overwrite")
    assert out.exit_code == 0 and "Shift: YES" in out.stdout and "Most novel" in out.stdout
    bad = run("compare", mnist.name, "--reference", "train", "--embeddings", "px")
    assert bad.exit_code == 1 and "tag:NAME" in bad.stderr and "Traceback" not in bad.output


def test_channels_are_chosen_recorded_and_never_silently_dropped(mnist, tmp_path):
    ds = mnist
    train, prod = ds.match_tags("train"), ds.match_tags("production")
    res = el.compare_datasets(train, prod, embeddings="px", brain_key="emb_only", channels="embedding")
    assert res.config["channels"]["used"] == ["embedding"] and "perceptual" not in res.config["channels"]
    both = el.compare_datasets(train, prod, embeddings="px", brain_key="both")
    info = both.config["channels"]
    assert info["requested"] == "auto" and info["used"] == ["embedding", "perceptual"]
    assert info["statistics"] == ["distance", "local_ratio"] and info["perceptual"]["reference"]["missing"] == 0
    assert "perceptual" in ds.list_embeddings()  # stored once, shared with find_duplicates
    assert ds.load_brain_results("both").config["channels"] == info
    with pytest.raises(el.InvalidInputError, match="channels must be one of"):
        el.compare_datasets(train, prod, embeddings="px", brain_key="bad", channels="pixels")
    # no image on disk: "auto" warns and records that the novelty is the embeddings' alone; "perceptual" refuses
    rng = np.random.default_rng(0)
    for name, n in (("no_files_ref", 200), ("no_files_tgt", 100)):
        other = el.Dataset(name)
        other.add_samples([el.Sample(str(tmp_path / f"{name}_{i}.png")) for i in range(n)])
        other.set_embeddings("emb", rng.normal(size=(n, 16)).astype(np.float32))
    with pytest.warns(UserWarning, match="perceptual channel"):
        res = el.compare_datasets("no_files_ref", "no_files_tgt", embeddings="emb", brain_key="blind", progress=False)
    assert res.config["channels"]["used"] == ["embedding"] and "skipped" in res.config["channels"]["perceptual"]
    assert 0 <= float(res.novelty.min()) and float(res.novelty.max()) < 1
    with pytest.raises(el.InvalidInputError, match="needs the images"), pytest.warns(UserWarning):
        el.compare_datasets("no_files_ref", "no_files_tgt", embeddings="emb", brain_key="blind2", channels="perceptual",
                            progress=False)

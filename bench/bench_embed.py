"""Embedding throughput: compute_embeddings against the model-only ceiling and the tutorial loop.

Run: ``.venv/bin/python bench/bench_embed.py [--quick]``. Cases (each in a fresh process):

- ``compute_embeddings`` on the 5,000 MNIST PNGs and on 1,000 photos (scikit-image's bundled photos,
  re-encoded at several sizes), default model, default backend;
- ceiling: the same backend on preloaded, preprocessed tensors (no decoding at all);
- tutorial loop: open, preprocess and run one image at a time in eager PyTorch;
- single-thread CPU time per image of the model alone, GFLOPs per image and achieved GFLOP/s;
- peak memory when embedding 2,000 vs 10,000 images (should not grow beyond the output array).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))
from harness import measure, save, table  # noqa: E402

ROOT = Path(tempfile.gettempdir()) / "embedlens-bench-embed"
os.environ.setdefault("EMBEDLENS_HOME", str(ROOT / "home"))
os.environ.setdefault("EMBEDLENS_MODEL_CACHE", str(ROOT / "models"))


def photo_files(n: int) -> list[str]:
    """``n`` real photos: scikit-image's colour photos re-encoded at several sizes (cached on disk)."""
    from PIL import Image
    from skimage import data

    folder = ROOT / "photos"
    folder.mkdir(parents=True, exist_ok=True)
    names = ["astronaut", "chelsea", "coffee", "rocket", "hubble_deep_field", "retina", "immunohistochemistry"]
    out = []
    for i in range(n):
        path = folder / f"{i:05d}.jpg"
        if not path.exists():
            img = Image.fromarray(getattr(data, names[i % len(names)])()).convert("RGB")
            scale = (0.6, 0.8, 1.0, 1.25)[i // len(names) % 4]
            img = img.resize((int(img.width * scale), int(img.height * scale)), Image.BICUBIC)
            img.save(path, quality=85 + i % 10)
        out.append(str(path))
    return out


def mnist_paths(n: int) -> list[str]:
    import embedlens as el

    paths = el.load_sample_dataset("mnist", progress=False).values("filepath")
    return [paths[i % len(paths)] for i in range(n)]


def _dataset(paths: list[str]):
    import embedlens as el

    ds = el.Dataset(persistent=False)
    ds.add_samples([el.Sample(p) for p in paths])
    return ds


def setup_dataset(kind: str, n: int):
    paths = mnist_paths(n) if kind == "mnist" else photo_files(n)
    import embedlens as el

    model = el.load_model()  # export/load outside the timed part
    model.embed(paths[:2])
    return (_dataset(paths), model)


def run_compute(ds, model):
    emb = ds.compute_embeddings(model, progress=False)
    return {"n": len(emb), "rss_out_mib": emb.nbytes / 2**20}


def setup_ceiling(kind: str, n: int):
    import numpy as np

    import embedlens as el

    paths = (mnist_paths if kind == "mnist" else photo_files)(64)
    model = el.load_model()
    batch = model.prepare_batch(paths[:32])
    model.embed_batch(batch)
    return (model, np.ascontiguousarray(batch), n)


def run_ceiling(model, batch, n):
    done = 0
    while done < n:
        model.embed_batch(batch)
        done += len(batch)
    return {"n": done}


def setup_tutorial(kind: str, n: int):
    import embedlens as el

    paths = (mnist_paths if kind == "mnist" else photo_files)(n)
    model = el.load_model(backend="torch")
    model.embed(paths[:1])
    return (model, paths)


def run_tutorial(model, paths):
    """What tutorials do: open, preprocess and run one image at a time in eager PyTorch."""
    from PIL import Image

    for p in paths:
        img = Image.open(p).convert("RGB")
        model.embed_batch(model.preprocess(img)[None])
    return {"n": len(paths)}


def single_thread_cpu_ms(batch_size: int = 16, rounds: int = 8) -> dict:
    import numpy as np

    import embedlens as el

    model = el.load_model(num_threads=1)
    paths = photo_files(batch_size)
    batch = model.prepare_batch(paths)
    model.embed_batch(batch)
    times = []
    for _ in range(rounds):
        c = time.process_time()
        model.embed_batch(batch)
        times.append((time.process_time() - c) / batch_size * 1000)
    return {"cpu_ms_per_image": float(np.median(times))}


def gflops_per_image() -> float:
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from embedlens.models.efficientnet import build_torch_module

    net = build_torch_module("lite0").eval()
    x = torch.zeros(1, 3, 224, 224)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        net.extract_features(x).mean((2, 3))
    return fc.get_total_flops() / 1e9


def main() -> None:
    quick = "--quick" in sys.argv
    rows = []
    for kind, n in (("mnist", 1000 if quick else 5000), ("photos", 200 if quick else 1000)):
        ours = measure(run_compute, kind, n, setup=setup_dataset)
        ceil = measure(run_ceiling, kind, n, setup=setup_ceiling)
        tut = measure(run_tutorial, kind, min(n, 300), setup=setup_tutorial)
        ips, cips, tips = n / ours["wall_s"], n / ceil["wall_s"], min(n, 300) / tut["wall_s"]
        rows.append({"case": f"compute_embeddings, {kind} x{n}", "img_per_s": ips, "ceiling_img_per_s": cips,
                     "of_ceiling": ips / cips, "tutorial_img_per_s": tips, "x_tutorial": ips / tips,
                     "peak_mib": ours["peak_mib"]})
    st = measure(single_thread_cpu_ms)["extra"]
    gf = measure(gflops_per_image)["extra"]
    print(table(rows, ["case", "img_per_s", "ceiling_img_per_s", "of_ceiling", "tutorial_img_per_s", "x_tutorial",
                       "peak_mib"]))
    best = max(r["img_per_s"] for r in rows)
    print(f"\nmodel alone, 1 thread: {st['cpu_ms_per_image']:.2f} ms CPU per image; "
          f"{gf:.3f} GFLOP per image; best pipeline {best:.0f} img/s = {best * gf:.0f} GFLOP/s achieved")
    mem = []
    for n in ((500, 2000) if quick else (2000, 10000)):
        r = measure(run_compute, "mnist", n, setup=setup_dataset)
        mem.append({"images": n, "peak_mib": r["peak_mib"], "output_mib": r["extra"]["rss_out_mib"],
                    "peak_minus_output_mib": r["peak_mib"] - r["extra"]["rss_out_mib"]})
    print(table(mem, ["images", "peak_mib", "output_mib", "peak_minus_output_mib"]))
    print("saved", save("embed" + ("-quick" if quick else ""),
                        rows + [{"single_thread": st, "gflop_per_image": gf}] + mem))


if __name__ == "__main__":
    main()

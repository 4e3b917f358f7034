"""Any ONNX image model, run with onnxruntime; also the session factory the built-in models share."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from .base import Model, hash_file, pool_activations
from .base import num_threads as resolve_threads
from ..core.errors import InvalidInputError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def make_session(path: str | os.PathLike, threads: int | None = None,
                 providers: Sequence[str] | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` tuned for batch inference in one thread of the caller.

    Sequential execution: these graphs are a chain of convolutions, so parallel branches gain nothing
    and inter-op threads would only compete with the intra-op pool for the same cores.
    """
    try:
        import onnxruntime as ort
    except ImportError:
        raise ImportError("ONNX models need onnxruntime: pip install onnxruntime") from None
    so = ort.SessionOptions()
    so.intra_op_num_threads = resolve_threads(threads)
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3  # warnings about unused initialisers etc. are noise to a user
    return ort.InferenceSession(os.fspath(path), so, providers=list(providers or ["CPUExecutionProvider"]))


def _static_batch_one(session: Any) -> bool:
    dim = session.get_inputs()[0].shape[0]
    return isinstance(dim, int) and dim == 1


class OnnxModel(Model):
    """An ONNX image model: resize, scale to [0, 1], normalise with ``mean``/``std``, NCHW float32.

    Parameters
    ----------
    path : str or PathLike
        The ``.onnx`` file. Its first input must take ``(N, 3, H, W)`` float32.
    input_size : (int, int), optional
        ``(width, height)`` images are resized to (bicubic, aspect ratio not kept). Defaults to the
        model's own input size when its graph fixes H and W.
    mean, std : sequence of 3 floats
        Per-channel normalisation after scaling to [0, 1]; ImageNet's by default.
    output : str, optional
        Name of the output used as embedding; the first output by default. 4-D outputs are
        average-pooled to ``(N, C)``, others flattened.
    logits_output : str, optional
        Name of an output holding class logits; makes the model a classifier.
    classes : list of str, optional
        Names of the logits' columns.
    num_threads : int, optional
        onnxruntime intra-op threads; all usable cores by default.
    providers : list of str, optional
        onnxruntime execution providers; CPU by default.
    name : str, optional
        Model name; the file's stem by default.
    """

    def __init__(self, path: str | os.PathLike, input_size: tuple[int, int] | None = None,
                 mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD,
                 output: str | None = None, logits_output: str | None = None,
                 classes: Sequence[str] | None = None, num_threads: int | None = None,
                 providers: Sequence[str] | None = None, name: str | None = None) -> None:
        super().__init__()
        self._init_kwargs = {"path": path, "input_size": input_size, "mean": mean, "std": std, "output": output,
                             "logits_output": logits_output, "classes": classes, "num_threads": num_threads,
                             "providers": providers, "name": name}
        self.path = Path(path)
        if not self.path.is_file():
            raise FileNotFoundError(f"ONNX model file not found: {self.path}")
        self.name = name or self.path.stem
        self._session = make_session(self.path, num_threads, providers)
        inp = self._session.get_inputs()[0]
        self._input_name = inp.name
        if len(inp.shape) != 4:
            raise InvalidInputError(f"{self.path}: input {inp.name!r} has shape {inp.shape}; expected (N, C, H, W)")
        if input_size is None:
            h, w = inp.shape[2], inp.shape[3]
            if not (isinstance(h, int) and isinstance(w, int)):
                raise InvalidInputError(f"{self.path}: input {inp.name!r} has dynamic size {inp.shape}; "
                                 "pass input_size=(width, height)")
            input_size = (w, h)
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != 3 or len(self.std) != 3:
            raise InvalidInputError("mean and std need 3 values (R, G, B)")
        outputs = [o.name for o in self._session.get_outputs()]
        for label, o in (("output", output), ("logits_output", logits_output)):
            if o is not None and o not in outputs:
                raise InvalidInputError(f"{self.path}: no {label} named {o!r}; outputs are {outputs}")
        self.output = output or outputs[0]
        self.logits_output = logits_output
        self.has_logits = logits_output is not None
        self.classes = list(classes) if classes is not None else None
        self._one_at_a_time = _static_batch_one(self._session)
        # Scale and shift folded so preprocessing is one multiply-add per pixel.
        self._scale = (1.0 / (255.0 * np.asarray(self.std, np.float32))).reshape(3, 1, 1)
        self._shift = (np.asarray(self.mean, np.float32) / np.asarray(self.std, np.float32)).reshape(3, 1, 1)
        out_shape = self._session.get_outputs()[outputs.index(self.output)].shape
        if len(out_shape) in (2, 4) and isinstance(out_shape[1], int):
            self.embedding_dim = int(out_shape[1])

    @property
    def config(self) -> dict[str, Any]:
        return {"type": "onnx", "file": self.path.name, "input_size": list(self.input_size),
                "resize": "bicubic", "scale": "1/255", "mean": list(self.mean), "std": list(self.std),
                "output": self.output, "pool": "global-average if 4-D", "logits_output": self.logits_output}

    def _weights_hash(self) -> str:
        return hash_file(self.path)

    def preprocess(self, img: Image.Image) -> np.ndarray:
        img = img.convert("RGB").resize(self.input_size, Image.BICUBIC)
        x = np.asarray(img, np.float32).transpose(2, 0, 1)
        return np.ascontiguousarray(x * self._scale - self._shift)

    def _run(self, arrays: np.ndarray, names: list[str]) -> list[np.ndarray]:
        x = np.ascontiguousarray(arrays, dtype=np.float32)
        if self._one_at_a_time and len(x) > 1:
            parts = [self._session.run(names, {self._input_name: x[i:i + 1]}) for i in range(len(x))]
            return [np.concatenate([p[j] for p in parts]) for j in range(len(names))]
        return self._session.run(names, {self._input_name: x})

    def embed_batch(self, arrays: np.ndarray) -> np.ndarray:
        emb = pool_activations(self._run(arrays, [self.output])[0])
        self.embedding_dim = emb.shape[1]
        return emb

    def predict_batch(self, arrays: np.ndarray) -> np.ndarray:
        if self.logits_output is None:
            return super().predict_batch(arrays)
        return np.asarray(self._run(arrays, [self.logits_output])[0], np.float32).reshape(len(arrays), -1)

    def embed_and_predict_batch(self, arrays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if self.logits_output is None:
            return super().embed_and_predict_batch(arrays)
        emb, logits = self._run(arrays, [self.output, self.logits_output])
        return pool_activations(emb), np.asarray(logits, np.float32).reshape(len(arrays), -1)

"""An onnxruntime session checked against its pack card, with vectorised preprocessing and the card's activation.

:class:`PackSession` takes uint8 RGB patches ``(n, size_px, size_px, 3)`` and returns float32 probabilities with the
class axis last: ``(n, n_classes)`` for a tile classifier, ``(n, out_px, out_px, n_classes)`` for a segmenter
(``out_px = size_px - 2 * halo_px``), plus the embedding ``(n, D)`` when the card names one.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from cytoreview.errors import PackError

#: Short device names accepted for ``providers``.
DEVICE_PROVIDERS = {
    "cpu": ["CPUExecutionProvider"],
    "cuda": ["CUDAExecutionProvider", "CPUExecutionProvider"],
}


class ProviderWarning(UserWarning):
    """A requested execution provider is not available and the session fell back to another one."""


def default_threads() -> int:
    """Intra-op threads per session: 1.

    The predictor runs ``cores // threads`` one-thread workers side by side, each decoding its own batch before running
    it; on a CPU that keeps every core busy with no more threads than cores, and it beat one session with many
    intra-op threads for the shipped small CNNs (``benchmarks/bench_inference.py`` measures all three shapes).
    """
    return 1


def resolve_providers(providers: str | Sequence[str] | None) -> tuple[list[str], list[str]]:
    """Map ``None`` / ``"cpu"`` / ``"cuda"`` / a list of onnxruntime provider names to the available providers.

    Returns
    -------
    providers : list of str
        What to pass to onnxruntime (always ends with CPU).
    notes : list of str
        One line per requested provider that is not available (the caller warns).
    """
    import onnxruntime as ort

    if providers is None:
        requested = ["CPUExecutionProvider"]
    elif isinstance(providers, str):
        key = providers.lower()
        if key in DEVICE_PROVIDERS:
            requested = DEVICE_PROVIDERS[key]
        elif providers.endswith("ExecutionProvider"):
            requested = [providers]
        else:
            raise PackError(f"unknown device {providers!r} (use cpu, cuda or an onnxruntime provider name)")
    else:
        requested = list(providers)
    available = set(ort.get_available_providers())
    chosen = [p for p in requested if p in available]
    notes = [
        f"{p} is not available in this onnxruntime ({', '.join(sorted(available))}); falling back to CPU"
        for p in requested
        if p not in available
    ]
    if "CPUExecutionProvider" not in chosen:
        chosen.append("CPUExecutionProvider")
    return chosen, notes


def _dim(value) -> int | None:
    """A fixed dimension as int, a symbolic/unknown one as None."""
    return value if isinstance(value, int) and value > 0 else None


def _shape_text(shape) -> str:
    return "(" + ", ".join(str(d) if isinstance(d, int) else (d or "?") for d in shape) + ")"


class PackSession:
    """onnxruntime session for one pack, checked against the card on creation.

    Parameters
    ----------
    pack : ModelPack
        The pack to run.
    providers : str or list of str, optional
        ``"cpu"`` (default), ``"cuda"`` (falls back to CPU with a :class:`ProviderWarning` when unavailable) or
        onnxruntime provider names.
    threads : int, optional
        Intra-op threads (default :func:`default_threads`).
    io_binding : bool, optional
        Run through an onnxruntime IO binding (default: yes on CUDA, no on CPU).

    Attributes
    ----------
    fixed_batch : int or None
        The model's batch size when its graph fixes one; None for a dynamic batch.
    out_px : int
        Output side of a segmenter (``size_px - 2*halo_px``); ``size_px`` for a tile classifier.
    embedding_dim : int or None
        Embedding width, when the card names an embedding output.
    providers : list of str
        Providers the session actually uses.
    notes : list of str
        Fallbacks that happened (e.g. CUDA not available).
    """

    def __init__(self, pack, providers: str | Sequence[str] | None = None, threads: int | None = None,
                 io_binding: bool | None = None):
        import onnxruntime as ort

        self.pack = pack
        card = pack.card
        self.layout = card["input"]["layout"]
        self.size_px = int(card["input"]["size_px"])
        self.halo_px = int(card["outputs"].get("halo_px", 0))
        self.out_px = self.size_px - 2 * self.halo_px
        self.n_classes = len(pack.classes)
        self.activation = card["outputs"]["probabilities"]["activation"]
        self.segmentation = card["task"] == "segmentation"
        self.steps = list(card["input"].get("preprocess", []))
        self.threads = int(threads or default_threads())

        chosen, self.notes = resolve_providers(providers)
        for note in self.notes:
            warnings.warn(f"{pack.name}: {note}", ProviderWarning, stacklevel=2)
        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.log_severity_level = 3
        # Spinning worker threads would steal the CPU from the tile readers running beside the session.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        try:
            self.session = ort.InferenceSession(str(pack.onnx_path), options, providers=chosen)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several unrelated types
            raise PackError(f"{pack.onnx_path}: cannot be loaded by onnxruntime: {exc}".replace("\n", " ")) from None
        self.providers = list(self.session.get_providers())
        # On a GPU, IO binding copies each batch to the device once and lets onnxruntime keep the outputs there until
        # they are fetched, instead of the per-run staging of session.run. On by default with CUDA; CPU can use it too.
        self.device = "cuda" if self.providers[0] == "CUDAExecutionProvider" else "cpu"
        self.io_binding = (self.device == "cuda") if io_binding is None else bool(io_binding)
        self._check_io()
        self._check_activations()

        inp = card["input"]
        std = np.asarray(inp["std"], dtype=np.float64)
        mean = np.asarray(inp["mean"], dtype=np.float64)
        self._mul = (float(inp["scale"]) / std).astype(np.float32)
        self._sub = (mean / std).astype(np.float32)
        self._bgr = inp["channel_order"] == "BGR"
        if self.layout == "NCHW":
            self._mul = self._mul.reshape(1, 3, 1, 1)
            self._sub = self._sub.reshape(1, 3, 1, 1)

    # ------------------------------------------------------------------ checks
    def _fail(self, what: str, expected: str, found) -> None:
        raise PackError(
            f"{self.pack.onnx_path}: {what}: expected {expected}, found {found} (card {self.pack.card_path})"
        )

    def _check_io(self) -> None:
        card = self.pack.card
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name: o for o in self.session.get_outputs()}
        in_name = card["input"]["name"]
        if in_name not in inputs:
            self._fail("input.name", f"an input named {in_name!r}", f"inputs {sorted(inputs)}")
        extra = sorted(name for name in inputs if name != in_name)
        if extra:
            self._fail("input", f"one image input {in_name!r}", f"further required inputs {extra}")
        shape = list(inputs[in_name].shape)
        s = self.size_px
        expected = f"{self.layout} (N, 3, {s}, {s})" if self.layout == "NCHW" else f"{self.layout} (N, {s}, {s}, 3)"
        if len(shape) != 4:
            self._fail(f"input {in_name!r} shape", expected, _shape_text(shape))
        chan, spatial = (shape[1], shape[2:4]) if self.layout == "NCHW" else (shape[3], shape[1:3])
        if _dim(chan) not in (None, 3) or any(_dim(d) not in (None, s) for d in spatial):
            self._fail(f"input {in_name!r} shape", expected, _shape_text(shape))
        if inputs[in_name].type != "tensor(float)":
            self._fail(f"input {in_name!r} type", "a float32 tensor", inputs[in_name].type)
        self.input_name = in_name
        self.fixed_batch = _dim(shape[0])

        prob_name = card["outputs"]["probabilities"]["name"]
        if prob_name not in outputs:
            self._fail("outputs.probabilities.name", f"an output named {prob_name!r}", f"outputs {sorted(outputs)}")
        pshape = list(outputs[prob_name].shape)
        c = self.n_classes
        if self.segmentation:
            o = self.out_px
            expected = f"(N, {c}, {o}, {o})" if self.layout == "NCHW" else f"(N, {o}, {o}, {c})"
            ok = len(pshape) == 4
            if ok:
                cdim, sp = (pshape[1], pshape[2:4]) if self.layout == "NCHW" else (pshape[3], pshape[1:3])
                ok = _dim(cdim) in (None, c) and all(_dim(d) in (None, o) for d in sp)
        else:
            expected = f"(N, {c}) for {c} classes"
            ok = len(pshape) == 2 and _dim(pshape[1]) in (None, c)
        if not ok:
            self._fail(f"output {prob_name!r} shape", expected, _shape_text(pshape))
        if c == 1 and self.activation == "softmax":
            raise PackError(
                f"{self.pack.card_path}: outputs.probabilities.activation: softmax over one channel is always 1; "
                "a one-channel output is a foreground probability (use sigmoid, or none when the graph ends in one)"
            )
        self.prob_name = prob_name

        self.boundary_name, self.boundary_activation = self._pixel_output(outputs, "boundary")
        self.markers_name, self.markers_activation = self._pixel_output(outputs, "markers")
        self.embedding_name, eshape = self._optional_output(outputs, "embedding", lambda sh: True, "(N, D)", rank=2)
        self.embedding_dim = _dim(eshape[1]) if eshape else None

    def _pixel_output(self, outputs: dict, key: str) -> tuple[str | None, str | None]:
        """``(name, activation)`` of an optional one-channel per-pixel output (``outputs.boundary``,
        ``outputs.markers``) of the probabilities' spatial size, or ``(None, None)`` when the card has none."""
        o = self.out_px
        name, _ = self._optional_output(
            outputs, key, lambda sh: _dim(sh[1] if self.layout == "NCHW" else sh[3]) in (None, 1)
            and all(_dim(d) in (None, o) for d in (sh[2:4] if self.layout == "NCHW" else sh[1:3])),
            f"(N, 1, {o}, {o})" if self.layout == "NCHW" else f"(N, {o}, {o}, 1)", rank=4)
        spec = self.pack.card["outputs"].get(key) or {}
        return name, (spec.get("activation", "sigmoid") if name else None)

    def _optional_output(self, outputs: dict, key: str, fits, expected: str, rank: int):
        """``(name, shape)`` of the optional output the card names under ``outputs.<key>``, or ``(None, None)``.

        The one check of the extra outputs (boundary, embedding): the graph has an output of that name, of ``rank``
        dimensions that ``fits(shape)`` accepts; else the error names the key and says ``expected``.
        """
        spec = self.pack.card["outputs"].get(key)
        if not spec:
            return None, None
        name = spec["name"]
        if name not in outputs:
            self._fail(f"outputs.{key}.name", f"an output named {name!r}", f"outputs {sorted(outputs)}")
        shape = list(outputs[name].shape)
        if len(shape) != rank or not fits(shape):
            self._fail(f"output {name!r} shape (outputs.{key})", expected, _shape_text(shape))
        return name, shape

    def _finite(self, raw: dict, name: str, what: str) -> np.ndarray:
        """Output ``name`` of a run as float32; a NaN or infinite value is a :class:`PackError` naming ``what``."""
        values = raw[name]
        if not np.isfinite(values).all():
            raise PackError(f"model {self.pack.ref} ({self.pack.onnx_path.name}) produced a NaN/inf {what}")
        return values.astype(np.float32, copy=False)

    def _check_activations(self) -> None:
        """Refuse a card activation that repeats the graph's own last op (softmax over Softmax, sigmoid over Sigmoid)."""
        from cytoreview.models.graph import final_ops

        wanted = {self.prob_name: ("outputs.probabilities", self.activation)}
        if self.boundary_name:
            wanted[self.boundary_name] = ("outputs.boundary", self.boundary_activation)
        if self.markers_name:
            wanted[self.markers_name] = ("outputs.markers", self.markers_activation)
        ops = final_ops(self.pack.onnx_path, list(wanted))
        for name, (key, activation) in wanted.items():
            op = ops.get(name)
            if op is not None and op.lower() == activation:
                raise PackError(
                    f"{self.pack.card_path}: {key}.activation: {activation!r} would be applied twice: the graph's "
                    f"output {name!r} already comes out of a {op} op (set activation: none)"
                )

    # ------------------------------------------------------------------ running
    def preprocess(self, patches: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """uint8 ``(n, size_px, size_px, 3)`` RGB -> float32 in the card's layout, channel order and normalisation.

        The channel flip and transpose are done on the uint8 data (a cheap contiguous copy), then one cast copy writes
        the float32 tensor and an in-place multiply and subtract finish the normalisation. ``out`` (float32,
        C-contiguous, the result's shape) is written in place instead of a new array: the predictor reuses one input
        per worker.
        """
        patches = np.asarray(patches)
        if patches.ndim != 4 or patches.shape[1:] != (self.size_px, self.size_px, 3):
            raise PackError(
                f"{self.pack.name}: patches must be (n, {self.size_px}, {self.size_px}, 3), got {patches.shape}"
            )
        if self.steps:
            from cytoreview.models.preprocess import apply_steps

            patches = apply_steps(patches, self.steps)
        src = patches[..., ::-1] if self._bgr else patches
        if self.layout == "NCHW":
            src = src.transpose(0, 3, 1, 2)
        src = np.ascontiguousarray(src)  # strided float math is ~2x slower than a uint8 copy + contiguous math
        if out is not None and (out.shape != src.shape or out.dtype != np.float32 or not out.flags.c_contiguous):
            raise PackError(f"{self.pack.name}: preprocess out= must be C-contiguous float32 {src.shape}")
        x = np.empty(src.shape, dtype=np.float32) if out is None else out
        # uint8 -> float32 in one cast copy, then the multiply and subtract in place: the same numbers as a mixed
        # uint8 x float32 multiply (the cast is exact), 10-20 % faster with the other core busy (its buffered cast)
        np.copyto(x, src, casting="unsafe")
        np.multiply(x, self._mul, out=x)
        x -= self._sub
        return x

    def run_raw(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Run already preprocessed input; pads to a fixed batch. Returns raw outputs (no activation)."""
        n = x.shape[0]
        names = [self.prob_name] + ([self.embedding_name] if self.embedding_name else [])
        names += [self.boundary_name] if self.boundary_name else []
        names += [self.markers_name] if self.markers_name else []
        step = self.fixed_batch or max(n, 1)
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for start in range(0, n, step):
            chunk = x[start : start + step]
            m = chunk.shape[0]
            if self.fixed_batch and m < self.fixed_batch:
                pad = np.zeros((self.fixed_batch - m, *chunk.shape[1:]), dtype=chunk.dtype)
                chunk = np.concatenate([chunk, pad])
            try:
                result = self.run_bound(names, chunk) if self.io_binding else self.session.run(
                    names, {self.input_name: chunk})
            except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own (unexported) error types
                text = str(exc).replace("\n", " ")
                raise PackError(
                    f"model {self.pack.ref} ({self.pack.onnx_path.name}) failed on a batch of {m} patch(es) of "
                    f"{tuple(chunk.shape[1:])}: {text[:300]}"
                ) from None
            for i, arr in enumerate(result):
                parts[i].append(np.asarray(arr)[:m])
        return {name: np.concatenate(p) if len(p) > 1 else p[0] for name, p in zip(names, parts)}

    def run_bound(self, names: list[str], chunk: np.ndarray) -> list[np.ndarray]:
        """One run through an IO binding on :attr:`device` (a binding per call: safe from several threads)."""
        import onnxruntime as ort

        binding = self.session.io_binding()
        value = ort.OrtValue.ortvalue_from_numpy(np.ascontiguousarray(chunk), self.device, 0)
        binding.bind_ortvalue_input(self.input_name, value)
        for name in names:
            binding.bind_output(name, self.device, 0)
        self.session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    def run(self, patches: np.ndarray) -> dict[str, Any]:
        """Run uint8 RGB patches; return ``{"probs": ..., "embedding": ... or None}`` (class axis last).

        Raises
        ------
        PackError
            When the model returns NaN/inf, or an output whose shape disagrees with the card.
        """
        return self.run_prepared(self.preprocess(patches))

    def run_prepared(self, x: np.ndarray) -> dict[str, Any]:
        """As :meth:`run`, for input already passed through :meth:`preprocess` (e.g. in a reader thread)."""
        raw = self.run_raw(x)
        logits = raw[self.prob_name]
        n = len(x)
        if self.segmentation and self.layout == "NCHW":
            logits = logits.transpose(0, 2, 3, 1)
        expected = (n, self.out_px, self.out_px, self.n_classes) if self.segmentation else (n, self.n_classes)
        if logits.shape != expected:
            raise PackError(
                f"{self.pack.onnx_path}: output {self.prob_name!r} has shape {logits.shape} (class axis last), "
                f"expected {expected} from the card"
            )
        if not np.isfinite(logits).all():
            raise PackError(f"model {self.pack.ref} ({self.pack.onnx_path.name}) produced NaN or infinite outputs")
        probs = apply_activation(logits.astype(np.float32, copy=False), self.activation)
        if self.activation == "none" and self.segmentation:  # a tile classifier may return raw scores (ranked only)
            check_probabilities(probs, self.pack, "outputs.probabilities")
        embedding = self._finite(raw, self.embedding_name, "embedding") if self.embedding_name else None
        out = {"probs": probs, "embedding": embedding}
        for key, name, activation in (("boundary", self.boundary_name, self.boundary_activation),
                                      ("markers", self.markers_name, self.markers_activation)):
            if name:
                b = self._finite(raw, name, key)
                out[key] = apply_activation(b[:, 0] if self.layout == "NCHW" else b[..., 0], activation)
                if activation == "none":
                    check_probabilities(out[key], self.pack, f"outputs.{key}")
        return out


def check_probabilities(values: np.ndarray, pack, key: str) -> None:
    """Refuse raw outputs outside [0, 1] stored as probabilities (``activation: none`` on logits)."""
    lo, hi = float(values.min(initial=0.0)), float(values.max(initial=0.0))
    if lo < -1e-4 or hi > 1 + 1e-4:
        raise PackError(
            f"{pack.card_path}: {key}.activation: 'none' but model {pack.ref} outputs values in [{lo:.3g}, {hi:.3g}], "
            "not probabilities (use sigmoid or softmax)"
        )


def apply_activation(logits: np.ndarray, activation: str) -> np.ndarray:
    """Apply ``softmax`` (over the last axis), ``sigmoid`` or ``none`` to float32 logits."""
    if activation == "softmax":
        shifted = logits - logits.max(axis=-1, keepdims=True)
        np.exp(shifted, out=shifted)
        shifted /= shifted.sum(axis=-1, keepdims=True)
        return shifted
    if activation == "sigmoid":
        return (0.5 * (1.0 + np.tanh(0.5 * logits))).astype(np.float32, copy=False)
    return logits


def normalised_entropy(probs: np.ndarray, activation: str) -> np.ndarray:
    """Uncertainty in [0, 1] per prediction from class-last probabilities.

    Softmax / none: entropy of the (renormalised) distribution divided by ``log(n_classes)``. Sigmoid (independent
    labels): mean binary entropy over classes divided by ``log 2``.
    """
    eps = np.float32(1e-12)
    p = np.clip(probs, 0.0, 1.0).astype(np.float32, copy=False)
    n_classes = p.shape[-1]
    if activation == "sigmoid":
        h = -(p * np.log(p + eps) + (1 - p) * np.log(1 - p + eps))
        return np.clip(h.mean(axis=-1) / np.log(2.0), 0.0, 1.0).astype(np.float32)
    if n_classes < 2:
        return np.zeros(p.shape[:-1], dtype=np.float32)
    total = p.sum(axis=-1, keepdims=True)
    q = np.where(total > 0, p / np.maximum(total, eps), 1.0 / n_classes)
    h = -(q * np.log(q + eps)).sum(axis=-1)
    return np.clip(h / np.log(n_classes), 0.0, 1.0).astype(np.float32)

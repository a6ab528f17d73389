"""One embedding engine for every device: precision, token-budget batches, optional compile.

``EmbeddingEngine.encode(texts)`` returns the vectors ``SentenceTransformer.encode(texts,
normalize_embeddings=True)`` would, in input order, computed faster: the texts are tokenized
once, sorted by length, grouped into batches by a token budget (padded length x rows <=
``batch_tokens``), run through the transformer at the chosen precision, pooled as the model's
Pooling module says (mean or CLS, fp32 accumulation) and L2-normalised. The forward runs in torch,
or on a CPU in OpenVINO: the same transformer and pooling converted to one graph at load. Module stacks it does
not understand (a Dense layer, another pooling mode, a default prompt ...) are handed to
``model.encode`` unchanged. Prefixes and the refusal of over-long inputs stay with the Embedder.
"""

from __future__ import annotations

import inspect
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ingest.batching import Batch, plan_batches
from ingest.precision import CHECK_SENTENCES, MIN_AGREEMENT, Precision, min_cosine, resolve
from korag.errors import ModelLoadError

if TYPE_CHECKING:  # the engine imports without pydantic-settings (bench/gpu_check.py on a bare GPU machine)
    from korag.settings import Settings

log = logging.getLogger(__name__)

# Measured (bench/RESULTS.md, "Memory of one korag ingest"): on 2 CPU cores with OpenVINO fp32,
# 4k-token batches ran MiniLM 1.21x as fast as 16k ones (cache-sized activations) and a CLI ingest
# of a 1.2 MB text peaked 118 MiB lower: attention memory grows with rows x heads x length^2
# floats. A GPU wants large batches: the reference script's best raw bf16 figure (563k tok/s,
# one H200) used 128k-token batches.
DEFAULT_BATCH_TOKENS = {"cpu": 4096, "cuda": 131072}
# Where the forward runs. auto: OpenVINO on a CPU where the package is installed (measured 1.36x
# torch's bf16 with MiniLM on this machine's CPU, bench/RESULTS.md), torch everywhere else.
RUNTIMES = ("auto", "torch", "openvino")


@dataclass(frozen=True)
class Tokens:
    """Unpadded token ids per input (and token type ids where the model takes them)."""

    input_ids: Sequence[Sequence[int]]
    type_ids: Sequence[Sequence[int]] | None


@dataclass(frozen=True)
class Stack:
    """What the engine reads from a SentenceTransformer: its transformer and pooling."""

    transformer: Any  # sentence-transformers' Transformer module
    pooling: str  # "mean" or "cls"
    lower_case: bool
    max_length: int


def understand(model: Any) -> Stack | str:
    """The model's module stack as a :class:`Stack`, or why the engine cannot reproduce it."""
    try:
        from sentence_transformers.sentence_transformer.modules import (  # lazy: torch, only where a model loads
            Normalize,
            Pooling,
            Transformer,
        )
    except ImportError:  # sentence-transformers 5.x
        from sentence_transformers.models import (  # lazy: torch, only where a model loads
            Normalize,
            Pooling,
            Transformer,
        )
    modules = list(model)
    if len(modules) not in (2, 3):
        return f"{len(modules)} modules (the engine knows Transformer, Pooling[, Normalize])"
    transformer, pooling = modules[0], modules[1]
    if not isinstance(transformer, Transformer) or not isinstance(pooling, Pooling):
        return f"modules {[type(m).__name__ for m in modules]} (the engine knows Transformer, Pooling[, Normalize])"
    if len(modules) == 3 and not isinstance(modules[2], Normalize):
        return f"third module {type(modules[2]).__name__} (the engine knows Normalize)"
    text = getattr(transformer, "modality_config", {"text": {"method": "forward"}}).get("text")
    if text is None or text.get("method") != "forward" or text.get("method_output_name", "last_hidden_state") not in (
            "last_hidden_state", ("last_hidden_state",), ["last_hidden_state"]):
        return f"transformer output {text!r} (the engine reads forward().last_hidden_state)"
    mode = getattr(pooling, "pooling_mode", None)
    if mode is None and hasattr(pooling, "get_pooling_mode_str"):
        mode = pooling.get_pooling_mode_str()
    if mode not in ("mean", "cls"):
        return f"pooling mode {mode!r} (the engine knows mean and cls)"
    if getattr(model, "default_prompt_name", None) is not None:
        return f"default prompt {model.default_prompt_name!r}"
    if transformer.tokenizer is None or transformer.max_seq_length is None:
        return "no tokenizer or max_seq_length"
    return Stack(transformer, mode, bool(getattr(transformer, "do_lower_case", False)), int(transformer.max_seq_length))


class EmbeddingEngine:
    """Build with :meth:`build` (from Settings) or directly; then call :meth:`encode`."""

    def __init__(self, model: Any, precision: str = "auto", batch_tokens: int | None = None,
                 compile_bucket: int | None = None, fallback_batch_size: int = 32, runtime: str = "auto") -> None:
        import torch  # lazy: torch, only where a model loads

        self.model = model
        self.device = torch.device(str(model.device))
        self.batch_tokens = batch_tokens if batch_tokens is not None else DEFAULT_BATCH_TOKENS.get(
            self.device.type, DEFAULT_BATCH_TOKENS["cpu"])
        self.fallback_batch_size = fallback_batch_size
        self.compile_bucket = compile_bucket
        self.agreement: float | None = None  # min cosine vs fp32 on CHECK_SENTENCES, when checked
        stack = understand(model)
        self.stack = stack if isinstance(stack, Stack) else None
        self.fallback_reason = stack if isinstance(stack, str) else None
        self.precision: Precision = resolve(precision, str(self.device))
        self.runtime = "torch"
        self._openvino: Any = None  # an OpenVINO infer request, when the forward runs there
        if runtime not in RUNTIMES:
            raise ModelLoadError(f"KORAG_EMBEDDING_RUNTIME={runtime!r}: choose one of {', '.join(RUNTIMES)}")
        if self.stack is None:
            log.warning("embedding engine: model.encode at fp32 for this model: %s", self.fallback_reason)
            self.precision = "fp32"
            self._module = None
            return
        self._module = self.stack.transformer.auto_model
        self._module.eval()
        if self.device.type == "cuda":
            self._use_sdpa()
        self._type_ids = "token_type_ids" in inspect.signature(self._module.forward).parameters
        if self._wants_openvino(runtime, compile_bucket):
            self._apply_openvino(checked=precision == "auto")
        else:
            self._apply_precision(checked=precision == "auto")
        if compile_bucket is not None:
            self._module = torch.compile(self._module, dynamic=False)
            self._allow_recompiles(len(self.bucket_lengths()) + 8)

    @classmethod
    def build(cls, model: Any, settings: Settings) -> "EmbeddingEngine":
        return cls(model, settings.embedding_precision, settings.embedding_batch_tokens,
                   fallback_batch_size=settings.embedding_batch_size,
                   runtime=settings.embedding_runtime)

    def describe(self) -> str:
        if self.stack is None:
            return f"model.encode fp32 on {self.device} ({self.fallback_reason})"
        checked = f", cosine {self.agreement:.4f} vs fp32 at load" if self.agreement is not None else ""
        compiled = f", compiled, {self.compile_bucket}-token buckets" if self.compile_bucket is not None else ""
        runtime = " via OpenVINO" if self.runtime == "openvino" else ""
        return f"{self.precision} on {self.device}{runtime}, {self.batch_tokens}-token batches{compiled}{checked}"

    # -- the one call ------------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], tokens: Tokens | None = None) -> np.ndarray:
        """Unit vectors (float32, one row per text, input order). ``tokens``: what
        ``tokenize(texts)`` returned, when the caller has it already (tokenize once)."""
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        if self.stack is None:
            vectors = self.model.encode(texts, batch_size=self.fallback_batch_size, normalize_embeddings=True,
                                        convert_to_numpy=True, show_progress_bar=False)
            return np.asarray(vectors, dtype=np.float32)
        tokens = tokens if tokens is not None else self.tokenize(texts)
        if len(tokens.input_ids) != len(texts):
            raise ValueError(f"{len(tokens.input_ids)} tokenized inputs for {len(texts)} texts")
        lengths = [len(x) for x in tokens.input_ids]
        if max(lengths) > self.stack.max_length:
            raise ValueError(f"an input of {max(lengths)} tokens exceeds max_seq_length {self.stack.max_length}: "
                             "refuse it, or tokenize with truncate=True")
        return self._run(tokens.input_ids, tokens.type_ids, self.plan(lengths))

    @property
    def takes_ids(self) -> bool:
        """Whether :meth:`encode` can take token ids made by the model's tokenizer on the raw text
        (add_special_tokens, no truncation): not when the stack lower-cases first, or falls back
        to ``model.encode``."""
        return self.stack is not None and not self.stack.lower_case

    @property
    def dimension(self) -> int:
        dimension = getattr(self.model, "get_embedding_dimension", None) or self.model.get_sentence_embedding_dimension
        return int(dimension())

    def tokenize(self, texts: Sequence[str], truncate: bool = True) -> Tokens:
        """Token ids as the model's Transformer module makes them (special tokens, lower-casing,
        truncation at max_seq_length unless ``truncate`` is False), without padding. One batched
        call; ``len(input_ids[i])`` is the count a limit check needs."""
        texts = list(texts)
        if not texts:
            return Tokens([], None)
        lower = self.stack.lower_case if self.stack is not None else bool(getattr(self.model[0], "do_lower_case", False))
        if lower:
            texts = [t.lower() for t in texts]
        limit = {"truncation": True, "max_length": int(self.model.max_seq_length)} if truncate else {}
        encoded = self.model.tokenizer(texts, add_special_tokens=True, padding=False, verbose=False, **limit)
        type_ids = encoded.get("token_type_ids") if self.stack is not None and self._type_ids else None
        return Tokens(encoded["input_ids"], type_ids)

    def plan(self, lengths: Sequence[int]) -> list[Batch]:
        """The batches :meth:`encode` runs for inputs of these token lengths."""
        if self.compile_bucket is None:
            return plan_batches(lengths, self.batch_tokens)
        max_length = self.stack.max_length if self.stack is not None else None
        return plan_batches(lengths, self.batch_tokens, self.compile_bucket, max_length, fixed_rows=True)

    def bucket_lengths(self) -> list[int]:
        if self.compile_bucket is None or self.stack is None:
            return []
        top = self.stack.max_length
        return sorted({min(n, top) for n in range(self.compile_bucket, top + self.compile_bucket, self.compile_bucket)})

    def warm_up(self) -> None:
        """Compile every bucket shape now, outside the hot path (no-op without compile)."""
        for length in self.bucket_lengths():
            rows = max(1, self.batch_tokens // length)
            self._run([[self.model.tokenizer.cls_token_id or 0] * length] * rows, None,
                      [Batch(tuple(range(rows)), length, rows)])

    # -- internals ---------------------------------------------------------------------------------
    def _run(self, ids: list[list[int]], type_ids: list[list[int]] | None, batches: list[Batch]) -> np.ndarray:
        """Forward ``batches`` and return the vectors in input order. On CUDA nothing here waits for
        the GPU until the end: inputs go up from pinned memory, vectors stay on the device, so the
        next batch is packed while the GPU runs the last one."""
        import torch  # lazy: torch, only where a model loads

        if not ids:
            return np.zeros((0, self.dimension), dtype=np.float32)
        cuda = self.device.type == "cuda"
        pad = self.model.tokenizer.pad_token_id if self.model.tokenizer.pad_token_id is not None else 0
        if self._openvino is not None:
            return self._run_openvino(ids, batches, pad)
        pooled: list[Any] = []
        with torch.inference_mode():
            for batch in batches:
                features = {k: torch.from_numpy(v) for k, v in _pack(ids, type_ids, batch, pad).items()}
                if cuda:
                    features = {k: v.pin_memory().to(self.device, non_blocking=True) for k, v in features.items()}
                hidden = self._module(**features).last_hidden_state
                pooled.append(_pool(hidden, features["attention_mask"], self.stack.pooling)[: len(batch.indices)])
            vectors = torch.cat(pooled).cpu().numpy()
        out = np.empty_like(vectors)
        out[np.fromiter((i for b in batches for i in b.indices), dtype=np.int64, count=len(vectors))] = vectors
        return out

    def _run_openvino(self, ids: Sequence[Sequence[int]], batches: list[Batch], pad: int) -> np.ndarray:
        """The same batches through the OpenVINO graph (transformer, pooling and normalisation in
        one compiled model): numpy in, unit vectors out."""
        out = np.empty((len(ids), self.dimension), dtype=np.float32)
        for batch in batches:  # the graph takes no token type ids (single-segment inputs: all zero)
            result = self._openvino.infer(_pack(ids, None, batch, pad))
            out[list(batch.indices)] = result[0][: len(batch.indices)]
        return out

    def _wants_openvino(self, runtime: str, compile_bucket: int | None) -> bool:
        """Whether the forward runs in OpenVINO: asked for, or ``auto`` on a CPU where the
        openvino package is installed, for fp32 or bf16 (int8 and torch.compile stay on torch)."""
        if runtime == "torch":
            return False
        named = runtime == "openvino"
        reason = None
        if self.device.type != "cpu":
            reason = f"runs on the CPU only, not {self.device}"
        elif compile_bucket is not None:
            reason = "does not combine with torch.compile"
        elif self.precision not in ("fp32", "bf16"):
            reason = f"runs fp32 or bf16, not {self.precision}"
        else:
            try:
                _openvino()
            except ImportError:
                reason = "needs the openvino package (pip install openvino)"
        if reason is not None and named:
            raise ModelLoadError(f"KORAG_EMBEDDING_RUNTIME=openvino {reason}; use auto or torch")
        return reason is None

    def _apply_openvino(self, checked: bool) -> None:
        """Convert the transformer with its pooling to an OpenVINO graph (dynamic batch and
        length) and compile it for this CPU at ``self.precision``. When ``checked`` (``auto``), bf16
        must agree with torch's fp32 on CHECK_SENTENCES (cosine >= MIN_AGREEMENT), else the torch
        fp32 forward stays."""
        import torch  # lazy: torch, only where a model loads
        from transformers.utils import logging as hf_logging  # lazy: torch, only where a model loads

        ov = _openvino()

        reference = self._encode_check() if checked else None
        example = {"input_ids": torch.ones((2, 8), dtype=torch.long),
                   "attention_mask": torch.ones((2, 8), dtype=torch.long)}
        inputs = [("input_ids", [-1, -1], ov.Type.i64), ("attention_mask", [-1, -1], ov.Type.i64)]
        verbosity = hf_logging.get_verbosity()
        hf_logging.set_verbosity_error()  # tracing notices from transformers, once per load
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                graph = ov.convert_model(_pooled(self._module, self.stack.pooling), example_input=example, input=inputs)
        finally:
            hf_logging.set_verbosity(verbosity)
        config = {"INFERENCE_PRECISION_HINT": "bf16" if self.precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": torch.get_num_threads(), "PERFORMANCE_HINT": "LATENCY"}
        self._openvino = ov.Core().compile_model(graph, "CPU", config).create_infer_request()
        self.runtime = "openvino"
        if reference is None or self._agrees(reference, f"OpenVINO {self.precision}"):
            return
        self._openvino, self.runtime, self.precision = None, "torch", "fp32"  # torch's fp32 forward

    def _encode_check(self) -> np.ndarray:
        tokens = self.tokenize(CHECK_SENTENCES)
        return self._run(tokens.input_ids, tokens.type_ids, plan_batches([len(x) for x in tokens.input_ids],
                                                                         self.batch_tokens))

    def _apply_precision(self, checked: bool) -> None:
        """Cast or quantize the transformer for ``self.precision``. When ``checked`` (``auto``),
        compare with fp32 on CHECK_SENTENCES first and stay at fp32 below MIN_AGREEMENT."""
        import torch  # lazy: torch, only where a model loads

        if self.precision == "fp32":
            return
        reference = self._encode_check() if checked else None
        saved = {k: v.detach().to("cpu", copy=True) for k, v in self._module.state_dict().items()} if checked else None
        fp32_module = self._module
        if self.precision == "int8":
            from torch.ao.quantization import quantize_dynamic  # lazy: torch, only where a model loads

            with warnings.catch_warnings():  # torch.ao's deprecation notice, once per load
                warnings.simplefilter("ignore")
                self._module = quantize_dynamic(fp32_module, {torch.nn.Linear}, dtype=torch.qint8, inplace=False)
        else:
            dtype = torch.bfloat16 if self.precision == "bf16" else torch.float16
            self._module = fp32_module.to(dtype)  # in place: the model's own weights, no second copy
        if reference is None or self._agrees(reference, self.precision):
            return
        fp32_module.to(torch.float32).load_state_dict(saved)
        self._module, self.precision = fp32_module, "fp32"

    def _agrees(self, reference: np.ndarray, what: str) -> bool:
        """Whether the forward as it now stands agrees with the fp32 ``reference`` vectors of
        CHECK_SENTENCES (cosine >= MIN_AGREEMENT); records and logs the agreement."""
        self.agreement = min_cosine(reference, self._encode_check())
        if self.agreement >= MIN_AGREEMENT:
            log.info("embedding engine: %s (cosine %.4f vs fp32 on built-in Korean sentences)", what, self.agreement)
            return True
        log.warning("embedding engine: %s reached only cosine %.4f vs fp32 (< %.2f); using fp32", what,
                    self.agreement, MIN_AGREEMENT)
        return False

    def _use_sdpa(self) -> None:
        """PyTorch's fused attention, as the reference script runs; models loaded with eager
        attention are switched where transformers allows it."""
        config = getattr(self._module, "config", None)
        if getattr(config, "_attn_implementation", "sdpa") == "sdpa" or not hasattr(self._module,
                                                                                    "set_attn_implementation"):
            return
        try:
            self._module.set_attn_implementation("sdpa")
        except (ValueError, ImportError) as exc:  # an architecture without SDPA support
            log.info("embedding engine: keeping %s attention (%s)", config._attn_implementation, exc)

    @staticmethod
    def _allow_recompiles(count: int) -> None:
        import torch._dynamo  # lazy: torch, only where a model loads

        config = torch._dynamo.config
        for name in ("recompile_limit", "cache_size_limit"):
            if hasattr(config, name):
                setattr(config, name, max(getattr(config, name), count))


def _pool(hidden: Any, mask: Any, pooling: str) -> Any:
    """The Pooling module's mean (or CLS), summed in fp32 as sentence-transformers does, then
    L2-normalised in fp32: torch's forward calls it, and OpenVINO's graph holds it (:func:`_pooled`)."""
    import torch  # lazy: torch, only where a model loads

    if pooling == "cls":
        pooled = hidden[:, 0].float()
    else:
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        pooled = torch.sum(hidden * weights, dim=1, dtype=torch.float32) / weights.sum(1, dtype=torch.float32).clamp(
            min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=-1)


def _pack(ids: Sequence[Sequence[int]], type_ids: Sequence[Sequence[int]] | None, batch: Batch,
          pad: int) -> dict[str, np.ndarray]:
    """One batch as padded int64 arrays (input ids, attention mask, token type ids when given).
    Rows past the batch's own inputs (fixed shapes for a compiled model) repeat its first input."""
    rows = [batch.indices[r] if r < len(batch.indices) else batch.indices[0] for r in range(batch.rows)]
    input_ids = np.full((batch.rows, batch.length), pad, dtype=np.int64)
    mask = np.zeros_like(input_ids)
    types = np.zeros_like(input_ids) if type_ids is not None else None
    for r, i in enumerate(rows):
        n = len(ids[i])
        input_ids[r, :n] = ids[i]
        mask[r, :n] = 1
        if types is not None:
            types[r, :n] = type_ids[i]
    features = {"input_ids": input_ids, "attention_mask": mask}
    if types is not None:
        features["token_type_ids"] = types
    return features


def _openvino() -> Any:
    """The openvino module, imported without its usage telemetry: ``openvino_telemetry`` forks a
    process on every model conversion to report it (offline, each one left ~120 pipes open, and a
    test run of many engines ran out of file descriptors). Blocking the import makes OpenVINO
    use its own no-op stub."""
    sys.modules.setdefault("openvino_telemetry", None)  # type: ignore[arg-type]
    import openvino  # lazy: only for the OpenVINO runtime

    return openvino


def _pooled(transformer: Any, pooling: str) -> Any:
    """The transformer, the Pooling module's mean (or CLS) and L2 normalisation as one torch
    module, for conversion to one OpenVINO graph."""
    import torch  # lazy: torch, only where a model loads

    class Pooled(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.transformer = transformer

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.transformer(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return _pool(hidden, attention_mask, pooling)

    return Pooled()

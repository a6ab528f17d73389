"""The embedding engine: same vectors as sentence-transformers, faster batches, any precision.

Real models: the offline all-MiniLM-L6-v2 package and the tiny KoE5-shaped XLM-RoBERTa of
conftest.py. Each engine gets its own SentenceTransformer because precisions cast in place.
"""

from __future__ import annotations

import numpy as np
import pytest

from bench.documents import long_korean_text
from ingest.batching import plan_batches
from ingest.engine import EmbeddingEngine
from ingest.precision import cpu_has_native_bf16, resolve
from korag.errors import ModelLoadError
from tests.conftest import make_settings, offline_model_path

MODELS = ["minilm", "tiny_xlmr"]


def _path(name: str, request) -> str:
    return offline_model_path() if name == "minilm" else str(request.getfixturevalue("tiny_xlmr_dir"))


def _fresh(name: str, request):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(_path(name, request), device="cpu")


def _texts() -> list[str]:
    """Korean inputs of very different lengths, long ones between short ones."""
    paragraphs = [p for p in long_korean_text(12).split("\n\n") if p.strip()]
    texts = ["passage: 연차휴가는 15일이다.", "query: 시행일은?"]
    for i, p in enumerate(paragraphs):
        texts.append("passage: " + p[: 40 + 97 * i])
        texts.append("query: " + p[:12])
    return texts


def _min_cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.min(np.sum(a.astype(np.float64) * b.astype(np.float64), axis=1)))


@pytest.fixture(scope="module")
def reference(request):
    """model.encode's vectors, fp32, for both models (what korag returned before the engine)."""
    out = {}
    for name in MODELS:
        model = _fresh(name, request)
        out[name] = model.encode(_texts(), batch_size=32, normalize_embeddings=True, convert_to_numpy=True)
    return out


@pytest.mark.parametrize("name", MODELS)
def test_fp32_engine_matches_sentence_transformers_in_input_order(name, request, reference):
    engine = EmbeddingEngine(_fresh(name, request), "fp32", batch_tokens=1024)
    texts = _texts()
    lengths = [len(ids) for ids in engine.tokenize(texts).input_ids]
    assert len(set(lengths)) > 5 and lengths != sorted(lengths)  # mixed lengths, not already sorted
    assert len(engine.plan(lengths)) > 2  # several batches, so order must be restored across them
    vectors = engine.encode(texts)
    assert vectors.dtype == np.float32 and vectors.shape == reference[name].shape
    assert _min_cos(vectors, reference[name]) >= 0.9999
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("name", MODELS)
def test_auto_on_this_cpu_keeps_cosine_with_fp32(name, request, reference):
    engine = EmbeddingEngine.build(_fresh(name, request), make_settings(request.getfixturevalue("tmp_path")))
    assert engine.precision == ("bf16" if cpu_has_native_bf16() else "fp32")
    if engine.precision != "fp32":
        assert engine.agreement is not None and engine.agreement >= 0.99
    assert _min_cos(engine.encode(_texts()), reference[name]) >= 0.99


def test_explicit_bf16_and_int8_run_and_say_what_they_are(request, reference):
    for precision in ("bf16", "int8"):
        engine = EmbeddingEngine(_fresh("tiny_xlmr", request), precision, batch_tokens=2048)
        assert engine.precision == precision and engine.agreement is None  # explicit: no check, no fallback
        vectors = engine.encode(_texts())
        assert vectors.shape == reference["tiny_xlmr"].shape and np.isfinite(vectors).all()
        assert precision in engine.describe()


def test_empty_input_gives_an_empty_matrix_of_the_model_dimension(request):
    engine = EmbeddingEngine(_fresh("tiny_xlmr", request), "fp32")
    vectors = engine.encode([])
    assert vectors.shape == (0, engine.dimension) and vectors.dtype == np.float32


def test_batches_never_exceed_the_token_budget():
    rng = np.random.default_rng(7)
    lengths = [int(x) for x in rng.integers(3, 513, size=400)]
    for budget in (512, 1000, 4096, 16384):
        for bucket, fixed in ((1, False), (64, True)):
            batches = plan_batches(lengths, budget, bucket=bucket, max_length=512, fixed_rows=fixed)
            seen = sorted(i for b in batches for i in b.indices)
            assert seen == list(range(len(lengths)))  # every input exactly once
            for b in batches:
                assert b.padded_tokens <= budget
                assert b.length >= max(lengths[i] for i in b.indices)
                if fixed:  # a compiled model meets one shape per bucket length
                    assert b.length % bucket == 0 or b.length == 512
                    assert b.rows == max(1, budget // b.length)


def test_budget_batches_group_short_inputs_and_keep_long_ones_few():
    batches = plan_batches([8] * 100 + [500] * 4, 2048)
    assert [(len(b.indices), b.length) for b in batches] == [(100, 8), (4, 500)]


def test_an_input_longer_than_the_budget_gets_a_batch_of_its_own():
    batches = plan_batches([10, 900, 12, 11], 512)
    assert [(b.indices, b.length, b.rows) for b in batches] == [((0, 3, 2), 12, 3), ((1,), 900, 1)]


def test_engine_uses_its_budget_on_real_tokens(request):
    engine = EmbeddingEngine(_fresh("tiny_xlmr", request), "fp32", batch_tokens=600)
    lengths = [len(ids) for ids in engine.tokenize(_texts()).input_ids]
    assert all(b.padded_tokens <= 600 or len(b.indices) == 1 for b in engine.plan(lengths))


@pytest.mark.parametrize("name", MODELS)
def test_openvino_runs_the_same_model_as_torch(name, request, reference):
    """On a CPU ``auto`` runs the forward in OpenVINO (a dependency of korag): at fp32 its
    vectors are torch's, at bf16 they keep cosine >= 0.99 with fp32, in input order."""
    texts = _texts()
    torch_fp32 = EmbeddingEngine(_fresh(name, request), "fp32", batch_tokens=1024, runtime="torch")
    ov_fp32 = EmbeddingEngine(_fresh(name, request), "fp32", batch_tokens=1024, runtime="openvino")
    assert (torch_fp32.runtime, ov_fp32.runtime) == ("torch", "openvino") and "OpenVINO" in ov_fp32.describe()
    assert _min_cos(ov_fp32.encode(texts), torch_fp32.encode(texts)) >= 0.9999
    default = EmbeddingEngine.build(_fresh(name, request), make_settings(request.getfixturevalue("tmp_path")))
    assert default.runtime == "openvino"
    vectors = default.encode(texts)
    assert vectors.dtype == np.float32 and np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert _min_cos(vectors, reference[name]) >= 0.99


def test_loading_engines_leaves_no_descriptors_open(request):
    """OpenVINO's usage telemetry forked a reporter on every model conversion and left ~120 pipes
    open each time: a test run, or a service that loads its model again, ran out of file
    descriptors. korag loads OpenVINO without it."""
    import os

    def open_descriptors() -> int:
        return len(os.listdir("/proc/self/fd"))

    EmbeddingEngine(_fresh("minilm", request), "fp32", runtime="openvino")  # imports, caches: once
    before = open_descriptors()
    for _ in range(3):
        EmbeddingEngine(_fresh("minilm", request), "fp32", runtime="openvino").encode(["passage: 시험입니다."])
    assert open_descriptors() - before < 10


def test_runtime_choices_refused_with_the_setting_to_change(request):
    with pytest.raises(ModelLoadError, match="KORAG_EMBEDDING_RUNTIME='onnx'"):
        EmbeddingEngine(_fresh("tiny_xlmr", request), "fp32", runtime="onnx")
    with pytest.raises(ModelLoadError, match="KORAG_EMBEDDING_RUNTIME=openvino runs fp32 or bf16, not int8"):
        EmbeddingEngine(_fresh("tiny_xlmr", request), "int8", runtime="openvino")
    int8 = EmbeddingEngine(_fresh("tiny_xlmr", request), "int8")  # auto: int8 stays on torch
    assert int8.runtime == "torch" and int8.precision == "int8"


def test_precision_choices_refused_with_the_setting_to_change():
    with pytest.raises(ModelLoadError, match="KORAG_EMBEDDING_PRECISION=fp16 is CUDA-only"):
        resolve("fp16", "cpu")
    with pytest.raises(ModelLoadError, match="int8 is CPU-only"):
        resolve("int8", "cuda:0")
    assert resolve("fp32", "cpu") == "fp32"


def test_module_stacks_it_does_not_know_go_to_model_encode(request, reference):
    from sentence_transformers.sentence_transformer.modules import Pooling

    model = _fresh("minilm", request)
    model[1] = Pooling(model[1].get_embedding_dimension(), "max")
    engine = EmbeddingEngine(model, "auto")
    assert engine.stack is None and "max" in engine.fallback_reason and engine.precision == "fp32"
    vectors = engine.encode(_texts())
    assert _min_cos(vectors, model.encode(_texts(), normalize_embeddings=True)) >= 0.9999
    assert _min_cos(vectors, reference["minilm"]) < 0.99  # max pooling really is something else


@pytest.mark.parametrize("name", MODELS)
def test_one_tokenization_serves_the_limit_check_and_the_forward(name, request):
    """The counts the Embedder refuses on are the engine's own token counts, so it can tokenize once."""
    embedder = request.getfixturevalue(name)
    engine = EmbeddingEngine(_fresh(name, request), "fp32", batch_tokens=2048)
    texts = _texts() + ["passage: " + long_korean_text(3)]
    tokens = engine.tokenize(texts, truncate=False)
    assert [len(x) for x in tokens.input_ids] == [embedder.passage_budget.input_tokens(t) for t in texts]
    fits = [i for i, x in enumerate(tokens.input_ids) if len(x) <= engine.stack.max_length]
    from ingest.engine import Tokens

    kept = Tokens([tokens.input_ids[i] for i in fits], [tokens.type_ids[i] for i in fits] if tokens.type_ids else None)
    assert np.array_equal(engine.encode([texts[i] for i in fits], kept), engine.encode([texts[i] for i in fits]))
    if len(fits) < len(texts):
        with pytest.raises(ValueError, match="exceeds max_seq_length"):
            engine.encode(texts, tokens)

"""Which numeric precision the embedding forward runs at, per device.

``auto``: on CUDA bf16 (fp16 where the GPU lacks bf16); on a CPU with native bf16 (AVX512-BF16
or AMX) bf16, checked at load against fp32 on built-in Korean sentences (cosine >= 0.99, else
fp32); on other CPUs fp32, because emulated bf16 is slower than fp32. int8 (dynamic
quantization of the Linear layers) is CPU-only and never chosen by ``auto``: on Korean text it
fell to cosine 0.71 against fp32 with all-MiniLM-L6-v2 (docs/engine.md).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from korag.errors import ModelLoadError

Precision = Literal["fp32", "fp16", "bf16", "int8"]
REQUESTS = ("auto", "fp32", "fp16", "bf16", "int8")
MIN_AGREEMENT = 0.99

# Built-in check sentences for ``auto`` on CPU: Korean of several lengths and registers.
CHECK_SENTENCES = (
    "passage: 근로자는 1년간 80퍼센트 이상 출근하면 15일의 유급휴가를 받을 수 있다.",
    "query: 연차휴가는 며칠인가요?",
    "passage: 이 규정은 공포한 날부터 시행한다. 다만, 제3조의 개정규정은 2025년 1월 1일부터 시행한다.",
    "passage: 서울특별시는 대한민국의 수도이며, 한강을 사이에 두고 강북과 강남으로 나뉜다. 인구는 약 940만 명이다.",
    "query: 법원조직법에 따라 대법관은 누가 임명하나요?",
    "passage: 제1장 총칙 > 제2조(정의) 이 법에서 사용하는 용어의 뜻은 다음과 같다. 1. \"개인정보\"란 살아 있는 "
    "개인에 관한 정보로서 성명, 주민등록번호 및 영상 등을 통하여 개인을 알아볼 수 있는 정보를 말한다.",
    "passage: 한국어 문서 검색 시스템은 문서를 나누고, 벡터로 바꾸고, 질문과 가까운 조각을 찾아 답의 근거로 삼는다.",
    "passage: 표 | 구분 | 금액 | 비고\n1 | 인건비 | 1,200,000원 | 월 기준",
)


def cpu_has_native_bf16() -> bool:
    import torch  # lazy: torch, only where a model loads

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except Exception:  # an old or unusual torch build: assume emulation
        return False


def resolve(requested: str, device: str) -> Precision:
    """The precision to run for a ``KORAG_EMBEDDING_PRECISION`` value on ``device``; an
    impossible combination is refused with the setting to change."""
    if requested not in REQUESTS:
        raise ModelLoadError(f"KORAG_EMBEDDING_PRECISION={requested!r}: choose one of {', '.join(REQUESTS)}")
    kind = device.split(":", 1)[0]
    if kind == "cuda":
        import torch  # lazy: torch, only where a model loads

        if requested == "int8":
            raise ModelLoadError("KORAG_EMBEDDING_PRECISION=int8 is CPU-only; on CUDA use auto, bf16, fp16 or fp32")
        if requested == "auto":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return requested  # type: ignore[return-value]
    if kind == "cpu":
        if requested == "fp16":
            raise ModelLoadError("KORAG_EMBEDDING_PRECISION=fp16 is CUDA-only (slow on CPUs); on CPU use auto, "
                                 "bf16, int8 or fp32")
        if requested == "auto":
            return "bf16" if cpu_has_native_bf16() else "fp32"
        return requested  # type: ignore[return-value]
    if requested not in ("auto", "fp32"):
        raise ModelLoadError(f"KORAG_EMBEDDING_PRECISION={requested} is supported on cpu and cuda, not {device}; "
                             "use auto or fp32")
    return "fp32"


def min_cosine(a, b) -> float:
    """Smallest row-wise cosine of two arrays of unit vectors."""
    return float(np.min(np.sum(np.asarray(a, dtype=np.float64) * np.asarray(b, dtype=np.float64), axis=1)))

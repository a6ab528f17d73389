"""A stand-in with KoE5's architecture for when KoE5's weights cannot be downloaded.

    python bench/koe5_standin.py OUT_DIR [--tiny] [--corpus corpus.jsonl]

XLM-RoBERTa with a SentencePiece-style Unigram tokenizer (<s>/</s>, 8,000 pieces trained here on
the corpus), mean pooling, normalisation, max_seq_length 512, random weights. Full size (24
layers, 1024 hidden, 250,002-token vocabulary, ~560M parameters) runs as fast as KoE5; --tiny
(2 layers, 64 hidden) chunks like KoE5 but costs nothing to run. Its vectors are meaningless:
use it for throughput and for chunking-dependent measurements such as the keyword channel.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

DEFAULT_CORPUS = Path(__file__).resolve().parents[2] / "shared" / "data" / "autorag-ko" / "corpus.jsonl"


def koe5_shaped_model(texts: list[str], out: Path, tiny: bool = False) -> Path:
    from sentence_transformers import SentenceTransformer
    from sentence_transformers import models as st_models
    from tokenizers import SentencePieceUnigramTokenizer
    from transformers import XLMRobertaConfig, XLMRobertaModel, XLMRobertaTokenizerFast

    sp = SentencePieceUnigramTokenizer()
    sp.train_from_iterator(texts, vocab_size=8000, special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
                           unk_token="<unk>")
    tokenizer = XLMRobertaTokenizerFast(tokenizer_object=sp._tokenizer, bos_token="<s>", eos_token="</s>",
                                        cls_token="<s>", sep_token="</s>", pad_token="<pad>", unk_token="<unk>",
                                        mask_token="<mask>", model_max_length=512)
    size = dict(vocab_size=8000, hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128) \
        if tiny else dict(vocab_size=250002, hidden_size=1024, num_hidden_layers=24, num_attention_heads=16,
                          intermediate_size=4096)
    config = XLMRobertaConfig(**size, max_position_embeddings=514, type_vocab_size=1,
                              pad_token_id=tokenizer.pad_token_id, bos_token_id=0, eos_token_id=2)
    hf = out / "hf"
    tokenizer.save_pretrained(hf)
    XLMRobertaModel(config).save_pretrained(hf)
    transformer = st_models.Transformer(str(hf), max_seq_length=512)
    dimension = getattr(transformer, "get_embedding_dimension", None) or transformer.get_word_embedding_dimension
    pooling = st_models.Pooling(dimension(), "mean")
    SentenceTransformer(modules=[transformer, pooling, st_models.Normalize()], device="cpu").save(str(out / "st"))
    return out / "st"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    args = parser.parse_args()
    texts = [json.loads(line)["text"] for line in args.corpus.open(encoding="utf-8")]
    print(koe5_shaped_model(texts, args.out, args.tiny))
    return 0


if __name__ == "__main__":
    sys.exit(main())

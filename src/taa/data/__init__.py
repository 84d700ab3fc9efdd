"""Data: corpora readers, subword tokenizers, batching. Imports no framework.

- ``text``: read sentence-per-line files (plain or gzip), with errors that name file and line.
- ``multi30k``: the German-English Multi30k corpus, from a folder, ``$TAA_DATA`` or a download.
- ``hf_datasets``: sentence pairs from a Hugging Face ``datasets`` dataset (optional).
- ``bpe``: byte-pair encoding written out for reading (Sennrich et al. 2016).
- ``tokenizer``: the BPE tokenizer real runs use, on the Rust ``tokenizers`` library.
- ``batching``: token-budget batches of similar lengths, deterministic and resumable.
- ``text_corpus``: running text for language models (Tiny Shakespeare), nanoGPT's split and windows.
- ``sst2``: ``sentence<TAB>label`` TSVs (GLUE SST-2) for sentence classification.
"""

from taa.data.batching import TokenBatcher, pad, padding_fraction
from taa.data.bpe import BytePairEncoding, learn_bpe
from taa.data.hf_datasets import pairs_from_hf_dataset
from taa.data.multi30k import (
    DATA_ENV,
    MULTI30K_FILES,
    SPLIT_SIZES,
    SPLITS,
    default_cache_dir,
    download_multi30k,
    find_data_dir,
    load_multi30k,
    multi30k_paths,
)
from taa.data.text import DataError, read_lines, read_parallel
from taa.data.tokenizer import CharTokenizer, SubwordTokenizer

__all__ = [
    "DATA_ENV",
    "MULTI30K_FILES",
    "SPLITS",
    "SPLIT_SIZES",
    "BytePairEncoding",
    "CharTokenizer",
    "DataError",
    "SubwordTokenizer",
    "TokenBatcher",
    "default_cache_dir",
    "download_multi30k",
    "find_data_dir",
    "learn_bpe",
    "load_multi30k",
    "multi30k_paths",
    "pad",
    "padding_fraction",
    "pairs_from_hf_dataset",
    "read_lines",
    "read_parallel",
]

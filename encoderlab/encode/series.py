"""Numeric series / images -> encoder input, with every statistic fitted on the training split.

Pipeline per example, (C, T) series or (C, H, W) image:
  select the first k channels -> average-pool -> normalise -> scheme.

Schemes (`[series] scheme`):
* bins  — each value becomes one of `bins` tokens of its channel (uniform or quantile edges);
          tokens are laid out time-major (t0c0 t0c1 ... t1c0 ...). Works with a pretrained text
          model (its vocabulary gains C x bins tokens with fresh embeddings) or from random init.
          Use when the exact level of a signal matters and T x C stays within a few hundred.
* grid  — the first `axes` channels are coordinates (2-D/3-D positions); each step becomes the
          token of its grid cell (`cells` per axis over the train range). Use for trajectories.
* sax   — each channel is z-normalised per example, averaged over windows of `segment` steps
          (PAA) and mapped to one of `alphabet` letters by Gaussian breakpoints. Use when shape
          matters more than level/scale, and to shorten long series.
* patch — no vocabulary: patches of `patch` steps (images: patch x patch pixels, all channels)
          are flattened and projected to the hidden size by a learned linear layer; the encoder
          adds its own position embeddings. Use for long series and images (fewest tokens).

The fitted state is a small JSON-able dict stored in the run's model folder (`encoderlab.json`),
so `predict` encodes new raw examples exactly like training did.
"""

from __future__ import annotations

import numpy as np

from encoderlab.config import SeriesConfig
from encoderlab.data.dataset import Split
from encoderlab.encode.text import Encoded
from encoderlab.errors import ConfigError, DataError


def _prepare(a: np.ndarray, state: dict) -> np.ndarray:
    """Channel selection and average pooling (no fitted statistics)."""
    if state["select"]:
        a = a[:state["select"]]
    p = state["pool"]
    if p > 1:
        if a.ndim == 2:
            T = a.shape[1] // p * p or a.shape[1]
            a = a[:, :T].reshape(a.shape[0], -1, min(p, T)).mean(-1)
        else:
            H, W = a.shape[1] // p * p, a.shape[2] // p * p
            a = a[:, :H, :W].reshape(a.shape[0], H // p, p, W // p, p).mean((2, 4))
    return a


def _normalise(a: np.ndarray, state: dict) -> np.ndarray:
    if state["normalize"] == "channel":
        shape = (-1,) + (1,) * (a.ndim - 1)
        return (a - np.asarray(state["mean"]).reshape(shape)) / np.asarray(state["std"]).reshape(shape)
    if state["normalize"] == "example":
        axes = tuple(range(1, a.ndim))
        return (a - a.mean(axes, keepdims=True)) / (a.std(axes, keepdims=True) + 1e-6)
    return a


def _flat_steps(a: np.ndarray) -> np.ndarray:
    """(C, T) or (C, H, W) -> (C, steps): images are read in raster order."""
    return a.reshape(a.shape[0], -1)


def prepare(raw: np.ndarray, state: dict) -> np.ndarray:
    """One raw example after channel selection, pooling and the fitted normalisation: what every
    scheme (and the baselines) starts from; same shape kind as `raw`."""
    return _normalise(_prepare(raw, state), state)


def fit(cfg: SeriesConfig, train: Split) -> dict:
    """The scheme's state from the training examples only."""
    xs = train.series
    channels = {a.shape[0] for a in xs}
    if len(channels) > 1:
        raise DataError(f"training examples have different channel counts {sorted(channels)}", file=train.source)
    C = channels.pop()
    if cfg.select > C:
        raise ConfigError(f"series.select = {cfg.select} but the data has {C} channels")
    kind = "image" if xs[0].ndim == 3 else "series"
    state = {"scheme": cfg.scheme, "kind": kind, "select": cfg.select, "pool": max(1, cfg.pool),
             "normalize": cfg.normalize, "channels": cfg.select or C}
    pre = [_prepare(a, state) for a in xs]
    steps = np.concatenate([_flat_steps(a) for a in pre], axis=1)            # (C, all train steps)
    if cfg.normalize == "channel":
        state["mean"] = steps.mean(1).tolist()
        state["std"] = np.maximum(steps.std(1), 1e-6).tolist()
    values = np.concatenate([_flat_steps(_normalise(a, state)) for a in pre], axis=1)
    if cfg.scheme == "bins":
        if cfg.bins < 2:
            raise ConfigError("series.bins must be at least 2")
        q = np.linspace(0, 1, cfg.bins + 1)[1:-1]
        if cfg.binning == "quantile":
            edges = np.quantile(values, q, axis=1).T                       # (C, bins-1)
        else:
            lo, hi = values.min(1, keepdims=True), values.max(1, keepdims=True)
            edges = lo + (hi - lo) * q[None]
        state.update(bins=cfg.bins, edges=edges.tolist())
        state["tokens"] = [f"[c{c}b{b}]" for c in range(state["channels"]) for b in range(cfg.bins)]
    elif cfg.scheme == "grid":
        if cfg.axes not in (2, 3) or state["channels"] < cfg.axes or kind != "series":
            raise ConfigError(f"series.scheme = \"grid\" needs a series with at least series.axes = {cfg.axes} "
                              f"coordinate channels (2 or 3); the data has {state['channels']} channels ({kind})")
        lo, hi = values[:cfg.axes].min(1), values[:cfg.axes].max(1)
        state.update(axes=cfg.axes, cells=cfg.cells, lo=lo.tolist(), hi=np.maximum(hi, lo + 1e-6).tolist())
        state["tokens"] = [f"[g{i}]" for i in range(cfg.cells ** cfg.axes)]
    elif cfg.scheme == "sax":
        if cfg.alphabet < 2 or cfg.segment < 1:
            raise ConfigError("series.alphabet must be >= 2 and series.segment >= 1")
        state.update(alphabet=cfg.alphabet, segment=cfg.segment,
                     breakpoints=_normal_ppf(np.linspace(0, 1, cfg.alphabet + 1)[1:-1]).tolist())
        state["tokens"] = [f"[c{c}s{s}]" for c in range(state["channels"]) for s in range(cfg.alphabet)]
    else:
        p = max(1, cfg.patch)
        state.update(patch=p, patch_dim=state["channels"] * (p * p if kind == "image" else p))
    return state


def _tokens(a: np.ndarray, state: dict) -> np.ndarray:
    """Token indices (into state["tokens"]) of one prepared, normalised example, time-major."""
    x = _flat_steps(a)                                                          # (C, S)
    C = x.shape[0]
    if state["scheme"] == "bins":
        edges = np.asarray(state["edges"])
        idx = np.stack([np.searchsorted(edges[c], x[c], side="right") for c in range(C)])   # (C, S)
        return (idx + np.arange(C)[:, None] * state["bins"]).T.reshape(-1)
    if state["scheme"] == "grid":
        n, k = state["cells"], state["axes"]
        lo, hi = np.asarray(state["lo"])[:, None], np.asarray(state["hi"])[:, None]
        cell = np.clip(((x[:k] - lo) / (hi - lo) * n).astype(np.int64), 0, n - 1)         # (k, S)
        return (cell * (n ** np.arange(k))[:, None]).sum(0)
    # sax: z-normalise each channel of this example, PAA, Gaussian breakpoints
    z = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-6)
    w = state["segment"]
    S = max(1, int(np.ceil(z.shape[1] / w)))
    padded = np.pad(z, ((0, 0), (0, S * w - z.shape[1])), mode="edge")
    paa = padded.reshape(C, S, w).mean(-1)
    letters = np.searchsorted(np.asarray(state["breakpoints"]), paa)                 # (C, S)
    return (letters + np.arange(C)[:, None] * state["alphabet"]).T.reshape(-1)


def _patches(a: np.ndarray, state: dict) -> np.ndarray:
    """(L, patch_dim) patch vectors; the last partial patch is zero-padded."""
    p = state["patch"]
    if a.ndim == 2:
        C, T = a.shape
        L = int(np.ceil(T / p))
        a = np.pad(a, ((0, 0), (0, L * p - T)))
        return a.reshape(C, L, p).transpose(1, 0, 2).reshape(L, C * p)
    C, H, W = a.shape
    h, w = int(np.ceil(H / p)), int(np.ceil(W / p))
    a = np.pad(a, ((0, 0), (0, h * p - H), (0, w * p - W)))
    return a.reshape(C, h, p, w, p).transpose(1, 3, 0, 2, 4).reshape(h * w, C * p * p)


def extend(state: dict, tokenizer, model, vocabulary: str = "extend", init: str = "pretrained"):
    """Give the model its input side: the scheme's tokens (bins/grid/sax) appended to the text
    vocabulary, or a vocabulary of its own (special tokens + the scheme's tokens, random init only);
    for patches the projection layer. Returns the tokenizer to use and store with the model."""
    from torch import nn
    tokens = state.get("tokens", [])
    if vocabulary == "own":
        if init != "random":
            raise ConfigError("series.vocabulary = \"own\" replaces the embeddings a pretrained model was "
                              "trained with; use it with model.init = \"random\"")
        from tokenizers import Tokenizer, models
        from encoderlab.encode import vocab as V
        tok = Tokenizer(models.WordLevel({t: i for i, t in enumerate(V.SPECIALS + tuple(tokens))}, unk_token="[UNK]"))
        V.add_cls_sep_template(tok)
        tokenizer = V.wrap(tok, "series", 512, None)
        model.encoder.resize_token_embeddings(len(tokenizer))
        model.encoder.config.pad_token_id = tokenizer.pad_token_id
    else:
        new = [t for t in tokens if t not in tokenizer.get_vocab()]
        if new:
            tokenizer.add_tokens(new, special_tokens=True)
        if len(tokenizer) > model.encoder.get_input_embeddings().num_embeddings:
            model.encoder.resize_token_embeddings(len(tokenizer))
    if state["scheme"] == "patch":
        model.frontend = nn.Linear(state["patch_dim"], model.encoder.config.hidden_size)
    return tokenizer


def encode(state: dict, split: Split, tokenizer, max_length: int) -> Encoded:
    """[CLS] tokens... [SEP] per example, truncated to max_length (the head is kept). For patches
    the ids are placeholders ([MASK]) whose embeddings the model replaces by projected patches."""
    from encoderlab.encode.text import Encoded     # torch-free imports above: baselines run without torch
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    if state["scheme"] != "patch":
        table = np.asarray(tokenizer.convert_tokens_to_ids(state["tokens"]), dtype=np.int64)
    placeholder = tokenizer.mask_token_id if tokenizer.mask_token_id is not None else tokenizer.unk_token_id
    ids, feats, at_limit = [], [], 0
    for i, raw in enumerate(split.series):
        if raw.shape[0] < state["channels"] or (raw.ndim == 3) != (state["kind"] == "image"):
            raise DataError(f"example has shape {raw.shape}; the model was fitted on {state['kind']} data with "
                            f"{state['channels']} channels", file=split.source, row=i + 1)
        a = prepare(raw, state)
        if state["scheme"] == "patch":
            patches = _patches(a, state)
            at_limit += len(patches) + 2 >= max_length
            f = patches[:max_length - 2].astype(np.float32)
            feats.append(f)
            body = np.full(len(f), placeholder, dtype=np.int64)
        else:
            tok = _tokens(a, state)
            at_limit += len(tok) + 2 >= max_length
            body = table[tok[:max_length - 2]]
        ids.append(np.concatenate([[cls], body, [sep]]).astype(np.int64))
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int64, count=len(ids))
    return Encoded(ids, None, lengths, split.labels, int(at_limit), tokenizer.pad_token_id or 0, feats or None)


def _normal_ppf(q: np.ndarray) -> np.ndarray:
    """Gaussian quantiles (SAX breakpoints); scipy.stats is imported here, not at start-up (~1 s)."""
    from scipy.stats import norm
    return norm.ppf(q)

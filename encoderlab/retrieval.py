"""A vector index over dictionary entries: exact inner-product search with numpy, or faiss when
it is installed (same results, faster on large dictionaries). Vectors are L2-normalised by the
caller for cosine scores."""

from __future__ import annotations

import numpy as np


def _faiss():
    try:
        import faiss  # optional
        return faiss
    except ImportError:
        return None


class VectorIndex:
    def __init__(self, vectors: np.ndarray, backend: str = "auto"):
        self.vectors = np.ascontiguousarray(vectors, dtype=np.float32)          # (N, H)
        faiss = _faiss() if backend in ("auto", "faiss") else None
        if backend == "faiss" and faiss is None:
            raise ImportError("faiss is not installed; use backend 'numpy'")
        self.backend = "faiss" if faiss is not None else "numpy"
        if faiss is not None:
            self._faiss = faiss.IndexFlatIP(self.vectors.shape[1])
            self._faiss.add(self.vectors)

    def __len__(self) -> int:
        return len(self.vectors)

    def search(self, queries: np.ndarray, k: int, chunk: int = 1024) -> tuple[np.ndarray, np.ndarray]:
        """Top-k (scores, rows), best first, for each query (Q, H) -> (Q, k') with k' = min(k, N)."""
        queries = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, len(self))
        if self.backend == "faiss":
            return self._faiss.search(queries, k)
        scores, rows = [], []
        for i in range(0, len(queries), chunk):
            s = queries[i:i + chunk] @ self.vectors.T                            # (q, N)
            top = np.argpartition(-s, k - 1, axis=1)[:, :k] if k < s.shape[1] else \
                np.tile(np.arange(s.shape[1]), (len(s), 1))
            ts = np.take_along_axis(s, top, 1)
            order = np.argsort(-ts, axis=1, kind="stable")
            rows.append(np.take_along_axis(top, order, 1))
            scores.append(np.take_along_axis(ts, order, 1))
        return np.concatenate(scores), np.concatenate(rows)

"""Putative matches between two photos' descriptor codes: mutual nearest neighbours that pass Lowe's ratio test.

Squared distances come from one integer product of the int8 codes,
|c - q|^2 = |c|^2 + |q|^2 - 2 c.q, every term exact in int32, so the matches
are the same on every CPU, whatever kernel or block size computes them.
ONNX Runtime's integer GEMM (MatMulInteger) takes the product, the codes
shifted to unsigned by 128 and the zero point 128 taking the shift out again:
u8 x s8 where the CPU has int8 dot-product instructions (VNNI, AMX), u8 x u8
elsewhere, because without them ONNX Runtime's u8 x s8 kernels add pairs of
products in int16 and saturate (255 x 127 x 2 > 32,767) while its u8 x u8
kernels widen first. Measured on an AMD Zen 4 (one thread, 2,000 x 2,000
keypoints): the product 1.5 ms (u8 x s8) or 3.3 ms (u8 x u8) against 5.4 ms
for NumPy's float32 BLAS.

The product is taken BLOCK_ROWS candidate keypoints at a time, and each block
goes through one compiled pass while it is in cache (:func:`nearest_two`):
each candidate keypoint's nearest and second-nearest query keypoint, the
nearest's index where the ratio test passes, and every query keypoint's
nearest candidate so far, for the mutual check. Compiled by Numba on first use
and cached on disk. No Django here.
"""

from __future__ import annotations

import functools

import numba
import numpy as np

from similarity.runtime.hardware import detect_cpu

BLOCK_ROWS = 128  # candidate keypoints a block of the product: 128 x 2,000 int32 is 1 MB
LOWEST = np.iinfo(np.int32).min
SHIFT = 128  # int8 code + 128 = its uint8 (the zero point ONNX Runtime takes out again)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def nearest_two(products, query_norms, candidate_norms, ratio_squared, best, nearest, query_best):
    """One block: ``products`` (rows, queries) int32, c_i . q_j for the block's candidate keypoints. For each
    candidate i, with v_j = 2 c_i.q_j - |q_j|^2 = |c_i|^2 - |c_i - q_j|^2 (larger is nearer): ``best[i]`` the
    largest v, ``nearest[i]`` the first j with it where the ratio test against the next largest v (equal to it
    on a tie) passes (d1 < ratio_squared d2, squared distances), -1 where it fails. For
    every query keypoint j, ``query_best[j]`` becomes the largest 2 c_i.q_j - |c_i|^2 = |q_j|^2 - |c_i - q_j|^2
    seen so far. Each row in two branch-free passes the compiler vectorises; the index is searched for only
    where the ratio test passes (few rows)."""
    rows, columns = products.shape
    for i in range(rows):
        row = products[i]
        norm = candidate_norms[i]
        top = np.int32(LOWEST)
        for j in range(columns):
            twice = row[j] + row[j]
            query_best[j] = max(query_best[j], np.int32(twice - norm))
            top = max(top, np.int32(twice - query_norms[j]))
        runner = np.int32(LOWEST)
        ties = 0
        for j in range(columns):
            value = np.int32(row[j] + row[j] - query_norms[j])
            runner = max(runner, value if value < top else np.int32(LOWEST))
            ties += value == top
        if ties > 1:
            runner = top
        best[i], nearest[i] = top, -1
        if float(norm - top) < ratio_squared * float(norm - runner):  # exact: integers far below 2^53
            for j in range(columns):
                if row[j] + row[j] - query_norms[j] == top:
                    nearest[i] = j
                    break


@functools.cache
def signed_product() -> bool:
    """Whether this CPU (its own flags, never simulated ones: exactness depends on them) takes the product as
    u8 x s8: it has int8 dot-product instructions, which do not saturate. Read once per process."""
    return detect_cpu().int8_dot


@functools.cache
def _product_session(signed: bool):
    """An ONNX Runtime session of one MatMulInteger, (n, 64) uint8 by (64, m) int8 or uint8, on the calling
    thread (the verification pool runs a pair per core)."""
    import onnx
    import onnxruntime
    from onnx import TensorProto, helper

    left, right = TensorProto.UINT8, (TensorProto.INT8 if signed else TensorProto.UINT8)
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["left", "right", "left_zero", "right_zero"], ["product"])],
        "code_product",
        [
            helper.make_tensor_value_info("left", left, [None, None]),
            helper.make_tensor_value_info("right", right, [None, None]),
        ],
        [helper.make_tensor_value_info("product", TensorProto.INT32, [None, None])],
        initializer=[
            helper.make_tensor("left_zero", left, [], [SHIFT]),
            helper.make_tensor("right_zero", right, [], [0 if signed else SHIFT]),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    onnx.checker.check_model(model)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return onnxruntime.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def shifted(codes: np.ndarray) -> np.ndarray:
    """int8 codes + 128, as uint8 (flipping the sign bit)."""
    return np.ascontiguousarray(codes, dtype=np.int8).view(np.uint8) ^ np.uint8(SHIFT)


def squared_norms(codes: np.ndarray) -> np.ndarray:
    wide = codes.astype(np.int32)
    return np.einsum("ij,ij->i", wide, wide).astype(np.int32)


class CodeMatcher:
    """One photo's codes (the query), ready to be matched against any number of others."""

    def __init__(self, codes: np.ndarray, signed: bool | None = None):
        self.signed = signed_product() if signed is None else signed
        self._session = _product_session(self.signed)
        self._count = len(codes)
        self._norms = squared_norms(codes)
        columns = np.ascontiguousarray(np.asarray(codes, dtype=np.int8).T)
        self._columns = columns if self.signed else shifted(columns)

    def product(self, rows: np.ndarray) -> np.ndarray:
        """c_i . q_j (int32) for candidate codes ``rows`` (n, 64) and every query code."""
        return self._session.run(None, {"left": shifted(rows), "right": self._columns})[0]

    def matches(self, codes: np.ndarray, ratio: float) -> tuple[np.ndarray, np.ndarray]:
        """Indices (query, candidate) of the mutual nearest neighbours whose nearest distance is below
        ``ratio`` times the second nearest; one-to-one (of candidates tied for a query keypoint, the first)."""
        none = np.zeros(0, np.intp)
        count = len(codes)
        if self._count < 2 or count < 2:
            return none, none
        norms = squared_norms(codes)
        best, nearest = np.empty(count, np.int32), np.empty(count, np.intp)
        query_best = np.full(self._count, LOWEST, np.int32)
        for start in range(0, count, BLOCK_ROWS):
            stop = min(start + BLOCK_ROWS, count)
            nearest_two(
                self.product(codes[start:stop]),
                self._norms,
                norms[start:stop],
                ratio * ratio,
                best[start:stop],
                nearest[start:stop],
                query_best,
            )
        passed = np.flatnonzero(nearest >= 0)
        to = nearest[passed]
        mutual = norms[passed] - best[passed] <= self._norms[to] - query_best[to]  # no candidate nearer to it
        candidate_index = passed[mutual]
        query_index, first = np.unique(nearest[candidate_index], return_index=True)
        return query_index, candidate_index[first]

"""Token embedding: a lookup table, one row of C numbers per vocabulary id.

    out[..., :] = table[ids[...], :]

The lookup is a selection, so its backward scatters: every position sends its dout row back to the
table row it read. An id that appears k times receives the sum of k rows (``np.add.at`` adds
repeats; plain ``dtable[ids] += dout`` would keep only the last one).
"""

import numpy as np

from myllm101.checks import check_ids, expect_float, expect_ndim, expect_shape


def embedding_forward(ids: np.ndarray, table: np.ndarray):
    """ids: integer (...), table: (V, C) -> out: (..., C), cache."""
    ids = np.asarray(ids)
    expect_ndim("table", table, 2)
    expect_float("table", table)
    V, C = table.shape
    check_ids(ids, V)
    out = table[ids]  # (..., C): fancy indexing copies the selected rows
    return out, (ids, V, C, table.dtype)


def embedding_backward(dout: np.ndarray, cache) -> np.ndarray:
    """dout: (..., C) -> dtable: (V, C); rows never looked up get zero."""
    ids, V, C, dtype = cache
    expect_shape("dout", dout, (*ids.shape, C))
    dtable = np.zeros((V, C), dtype=dtype)  # (V, C)
    # unbuffered scatter-add: a repeated id accumulates every one of its rows
    np.add.at(dtable, ids.reshape(-1), dout.reshape(-1, C))
    return dtable

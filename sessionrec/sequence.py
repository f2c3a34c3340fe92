"""The padded click sequence: the `sequence` input schema's builder (GRU4Rec, NARM, STAMP, SASRec, CORE).

A session s = [i1, ..., in] (model ids, oldest first) keeps its last max_len clicks, repeats and
order included, left-aligned: position t holds the t-th kept click, positions n..L-1 are padding (0).
Worked example, s = [5, 3, 5, 7], max_len 6:

    items = [5, 3, 5, 7, 0, 0]      mask = [1, 1, 1, 1, 0, 0]      last click at mask.sum() - 1 = 3

Left-aligned (not right-aligned as some SASRec code pads) so that a prefix of a session is a prefix
of its tensor: position embeddings count from the oldest kept click, and the tensor can be cut to
the batch's longest session in training without moving anything. Numpy only, like sessionrec.graph:
the Triton preprocess step imports it without torch.
"""

from __future__ import annotations

import numpy as np

SEQUENCE_INPUTS = ("items", "mask")


def build_sequence(session: list[int] | np.ndarray, max_len: int, pad_to: int | None = None):
    """One session (model ids, no zeros) -> (items, mask), each (pad_to,), padded at the end."""
    seq = np.asarray(session, dtype=np.int64)[-max_len:]
    width = max_len if pad_to is None else pad_to
    if seq.size > width:
        raise ValueError(f"pad_to={width} is shorter than the session ({seq.size} clicks)")
    items = np.zeros(width, dtype=np.int64)
    mask = np.zeros(width, dtype=np.float32)
    items[: seq.size] = seq
    mask[: seq.size] = 1.0
    return items, mask

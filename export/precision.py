"""Precision variants of the encoder (FP32, FP16, INT8), each measured for quality and CPU latency.

- FP16: weights and activations in half precision (onnxruntime's float16 converter), inputs and
  outputs kept FP32 so the served tensor contract does not change. On GPUs this halves memory traffic;
  on CPUs onnxruntime mostly casts back, so it is usually slower there — measured, not assumed.
- INT8: dynamic quantization (weights int8, activations quantized per batch at run time;
  onnxruntime.quantization.quantize_dynamic). No calibration set needed.

Quality is HR@20 / MRR@20 on real test prefixes with exact full-catalogue scoring against the FP32
item table (so only the encoder's precision changes), next to FP32's, and top-20 agreement with FP32.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from sessionrec.metrics import RankingMetrics
from sessionrec.schemas import DEFAULT_SCHEMA, get_schema
from sessionrec.serving.encoder import OnnxEncoder

PRECISIONS = ("fp32", "fp16", "int8")
FILES = {"fp32": "model.onnx", "fp16": "model.fp16.onnx", "int8": "model.int8.onnx"}


def top20(scores: np.ndarray) -> np.ndarray:
    """(B, N) -> (B, 20) column indices, best first (partition first: a full sort is 40x the work)."""
    part = np.argpartition(-scores, 19, axis=1)[:, :20]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    return np.take_along_axis(part, order, axis=1)


def write_variant(fp32_path: Path, precision: str) -> Path:
    fp32_path = Path(fp32_path)
    target = fp32_path.parent / FILES[precision]
    if precision == "fp32":
        return fp32_path
    import onnx

    from sessionrec.export.onnx_export import data_file

    external = data_file(fp32_path).is_file()  # a large table: the variant keeps its weights outside too
    if precision == "fp16":
        from onnxruntime.transformers.float16 import convert_float_to_float16

        model = convert_float_to_float16(onnx.load(str(fp32_path)), keep_io_types=True)
        if external:
            onnx.save(model, str(target), save_as_external_data=True, all_tensors_to_one_file=True,
                      location=data_file(target).name)
        else:
            onnx.save(model, str(target))
        del model
        # The converter's inserted input casts leave the node list out of topological order, which
        # onnx.checker rejects but onnxruntime accepts (it sorts on load): validated by loading it.
        return target
    elif precision == "int8":
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(str(fp32_path), str(target), weight_type=QuantType.QInt8, use_external_data_format=external)
        if external and not data_file(target).is_file():  # the quantizer names its data file after the model's
            raise RuntimeError(f"{target}: quantize_dynamic wrote no external data file {data_file(target).name}")
    else:
        raise ValueError(f"unknown precision {precision!r}; choose from {PRECISIONS}")
    onnx.checker.check_model(str(target))
    return target


def score_rows(n_items: int, budget: int = 64 << 20) -> int:
    """Sessions per full-catalogue scoring block: a (rows, N) float32 block stays under `budget`
    floats (256 MB), so exact scoring of a 10M-item catalogue runs in bounded memory."""
    return max(1, min(256, budget // max(1, n_items)))


def encoder_latency_ms(encoder: OnnxEncoder, sessions: list[list[int]], max_len: int, batch: int, repeats: int = 30,
                       schema: str = DEFAULT_SCHEMA) -> float:
    """Median wall time of one encoder call at this batch size (inputs padded to max_len, as served)."""
    picked = [sessions[i % len(sessions)] for i in range(batch)]
    inputs = get_schema(schema).batch(picked, max_len)
    encoder(inputs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        encoder(inputs)
        times.append((time.perf_counter() - start) * 1000)
    return float(np.median(times))


def measure_variants(
    onnx_fp32: Path,
    item_table: np.ndarray,  # (N, d) FP32 scoring vectors of model ids 1..N
    prefixes: list[list[int]],
    targets: np.ndarray,
    train_counts: np.ndarray,
    max_len: int,
    precisions: tuple[str, ...] = PRECISIONS,
    schema: str = DEFAULT_SCHEMA,
) -> dict[str, dict]:
    """{precision: {file, HR@20, MRR@20, top20_agreement_vs_fp32, latency_ms_b1, latency_ms_b64}}."""
    from sessionrec.export.onnx_export import data_file

    results, reference = {}, None
    for precision in precisions:
        path = write_variant(onnx_fp32, precision)
        encoder = OnnxEncoder(path, threads=1)
        metrics = RankingMetrics(item_table.shape[0], train_counts)
        tops = []
        rows = score_rows(item_table.shape[0])
        for start in range(0, len(prefixes), rows):
            inputs = get_schema(schema).batch(prefixes[start : start + rows], max_len)
            scores = encoder(inputs) @ item_table.T  # (B, N)
            top = top20(scores) + 1
            metrics.update(top, targets[start : start + rows])
            tops.append(top)
        top_all = np.concatenate(tops)
        if reference is None:
            reference = top_all
        agreement = float(np.mean([len(np.intersect1d(a, b)) / 20 for a, b in zip(top_all, reference)]))
        quality = metrics.result()
        results[precision] = {
            "file": path.name,
            "HR@20": quality["HR@20"],
            "MRR@20": quality["MRR@20"],
            "top20_agreement_vs_fp32": agreement,
            "latency_ms_b1": encoder_latency_ms(encoder, prefixes, max_len, 1, schema=schema),
            "latency_ms_b64": encoder_latency_ms(encoder, prefixes, max_len, 64, repeats=10, schema=schema),
            "bytes": path.stat().st_size + (data_file(path).stat().st_size if data_file(path).is_file() else 0),
        }
    return results

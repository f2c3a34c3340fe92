"""`sessionrec export-encoder` (a user's own PyTorch encoder) and `sessionrec import` (outside checkpoints)."""

from __future__ import annotations

import json
from pathlib import Path

from sessionrec.schemas import SCHEMAS


def add_parser(sub) -> None:
    parser = sub.add_parser(
        "export-encoder",
        help="a user's own PyTorch session encoder -> verified new version (same gates as export)",
        description=(
            "Export any nn.Module that meets the encoder contract (README, 'Bring your own model'): it takes "
            "the tensors of --schema and returns (B, d) session vectors; items are scored by inner product "
            "with item_table. The module's code is imported from --module, its weights read from safetensors "
            "(never a pickle). Example: sessionrec export-encoder --module examples.stamp_encoder:STAMP "
            "--init runs/stamp/init.json --weights runs/stamp/model.safetensors --items runs/stamp/items.safetensors "
            "--schema sequence --max-len 16 --data sessionrec/data/diginetica-sample.csv --repository runs/repository"
        ),
    )
    parser.add_argument("--module", required=True, help="import path of the module class or factory, package.module:Name")
    parser.add_argument("--init", default="{}", help="keyword arguments for it: a JSON object, or a .json file holding one")
    parser.add_argument("--weights", required=True, help="the module's state dict, safetensors")
    parser.add_argument("--items", required=True, help="safetensors with item_table (N, d), raw_ids (N,), optional item_counts (N,)")
    parser.add_argument("--schema", required=True, choices=sorted(SCHEMAS), help="the input schema the module takes")
    parser.add_argument("--max-len", type=int, required=True, help="sessions keep their last max_len clicks")
    parser.add_argument("--data", required=True, help="click log or SR-GNN folder: test sessions for parity and canaries")
    parser.add_argument("--repository", required=True)
    parser.add_argument("--fixture", help="a DGL recording (contrib/dgl/record.py) the module must reproduce first")
    parser.add_argument("--python-path", default=".", help="folder put first on sys.path to import --module (default .)")
    parser.add_argument("--quiet", action="store_true")
    parser.set_defaults(run=run_export_encoder)

    imports = sub.add_parser("import", help="convert a checkpoint from outside into a sessionrec checkpoint",
                             description="Checkpoints from outside, converted; then `sessionrec export` runs all its gates. "
                                         "Example: sessionrec import srgnn-reference srgnn.pt --data DATA --out runs/imported.pt")
    routes = imports.add_subparsers(dest="route", required=True, metavar="ROUTE")
    ref = routes.add_parser(
        "srgnn-reference",
        help="a state dict of the public SR-GNN code (CRIPAC-DIG/SR-GNN pytorch_code)",
        description=(
            "Convert torch.save(model.state_dict()) of the SR-GNN reference SessionGraph (loaded with "
            "weights_only=True) onto sessionrec's gated model; hidden biases b_iah/b_oah fold exactly into the "
            "cell. Example: sessionrec import srgnn-reference srgnn.pt --data ../shared/data/diginetica "
            "--out runs/imported.pt && sessionrec export runs/imported.pt --repository runs/repository"
        ),
    )
    ref.add_argument("state_dict", help="the reference model's state dict (torch.save)")
    ref.add_argument("--out", required=True, help="sessionrec checkpoint to write")
    ref.add_argument("--data", help="the data it was trained on: popularity fallback, and export's default --data")
    ref.add_argument("--step", type=int, default=1, help="the reference's --step (GNN propagation steps; default 1)")
    ref.add_argument("--nonhybrid", action="store_true", help="it was trained with the reference's --nonhybrid")
    ref.add_argument("--max-len", type=int, default=32, help="served sessions keep their last max_len clicks (default 32)")
    ref.add_argument("--raw-ids", help=".npy (n_node-1,) int64: catalogue id of reference items 1..n_node-1 "
                                       "(default: the reference number is the catalogue id, as in SR-GNN folders)")
    ref.set_defaults(run=run_import_reference)

    dgl = routes.add_parser(
        "dgl",
        help="a DGL model recorded by contrib/dgl/record.py (weights + parity fixture)",
        description=(
            "Map the reference DGL SR-GNN's weights (contrib/dgl/srgnn_dgl.py) onto the dense model and refuse "
            "unless it reproduces the recorded fixture (max abs diff <= 1e-4, top-20 agreement >= 0.99). "
            "Example: sessionrec import dgl tests/fixtures/dgl-srgnn --data sessionrec/data/diginetica-sample.csv "
            "--out runs/dgl.pt && sessionrec export runs/dgl.pt --repository runs/repository"
        ),
    )
    dgl.add_argument("fixture", help="folder with weights.safetensors, fixture.safetensors, fixture.json")
    dgl.add_argument("--out", required=True, help="sessionrec checkpoint to write")
    dgl.add_argument("--data", help="the data it was trained on: popularity fallback, and export's default --data")
    dgl.set_defaults(run=run_import_dgl)


def _init(text: str) -> dict:
    from sessionrec.contract import ContractError

    source = Path(text).read_text() if text.endswith(".json") else text
    try:
        value = json.loads(source)
    except json.JSONDecodeError as exc:
        raise ContractError(f"--init {text!r}: not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise ContractError(f"--init {text!r}: expected a JSON object of keyword arguments")
    return value


def run_export_encoder(args) -> int:
    from sessionrec.export.exporter import export_encoder
    from sessionrec.user_model import build_module, read_items

    init = _init(args.init)
    module = build_module(args.module, init, args.weights, search=args.python_path)
    items = read_items(args.items)
    if args.fixture:  # a custom DGL model's dense re-implementation: same thresholds as `import dgl`
        from sessionrec.contract import make_spec
        from sessionrec.import_dgl import FixtureError, read_fixture, verify_fixture

        spec = make_spec(module, items["item_table"], items["raw_ids"], args.schema, args.max_len)
        report = verify_fixture(spec, read_fixture(args.fixture))
        if not report.passed:
            raise FixtureError(f"{args.fixture}: the module does not reproduce the DGL fixture: max abs diff "
                               f"{report.max_abs_diff:.2e} (limit {report.max_abs_diff_limit:.0e}), top-20 agreement "
                               f"{report.top20_agreement:.4f} (limit {report.top20_agreement_limit}); refusing to export")
    result = export_encoder(module, items["item_table"], items["raw_ids"], args.schema, args.repository,
                            max_len=args.max_len, data=args.data, item_counts=items.get("item_counts"),
                            progress=not args.quiet, model_config={"module": args.module, "init": init})
    m = result.manifest
    print(json.dumps({"version": result.version, "repository": str(result.repository), "schema": args.schema,
                      "parity": {k: m["parity"][k] for k in ("max_abs_diff", "top20_agreement", "sessions")},
                      "pipeline_check": m["pipeline_check"]}, indent=2))
    return 0


def run_import_reference(args) -> int:
    import numpy as np

    from sessionrec.checkpoint import save_checkpoint
    from sessionrec.import_srgnn import import_reference

    raw_ids = np.load(args.raw_ids, allow_pickle=False) if args.raw_ids else None
    ckpt = import_reference(args.state_dict, args.data, args.step, args.nonhybrid, args.max_len, raw_ids)
    path = save_checkpoint(ckpt, args.out)
    print(json.dumps({"checkpoint": str(path), "n_items": ckpt.model_config.n_items, "dim": ckpt.model_config.dim,
                      "step": args.step, "nonhybrid": args.nonhybrid}, indent=2))
    return 0


def run_import_dgl(args) -> int:
    from sessionrec.checkpoint import save_checkpoint
    from sessionrec.import_dgl import import_dgl

    ckpt, report = import_dgl(args.fixture, args.data)  # raises (nothing written) unless the fixture is reproduced
    path = save_checkpoint(ckpt, args.out)
    print(json.dumps({"checkpoint": str(path), "fixture": report.to_dict(), "n_items": ckpt.model_config.n_items,
                      "node_update": ckpt.model_config.node_update}, indent=2))
    return 0

"""Model variants: shapes, padding invariance, one-epoch smoke training, checkpoints."""

import numpy as np
import pytest
import torch

from sessionrec.checkpoint import Checkpoint, CheckpointError, load_checkpoint, save_checkpoint
from sessionrec.graph import build_batch
from sessionrec.model import ModelConfig, SessionModel

VARIANTS = {
    "gated": dict(node_update="gated"),
    "mean": dict(node_update="mean"),
    "gated+attention": dict(attention_heads=2),
    "mean+lowrank": dict(node_update="mean", attention_heads=2, attention_rank=4),
    "plain-dot (no NISER)": dict(normalize=False, steps=2),
    "niser+ forward positions": dict(position="forward", gnn_dropout=0.2, table_dropout=0.1),
    "niser+ reversed positions": dict(position="reverse", gnn_dropout=0.2, table_dropout=0.1),
}


@pytest.mark.parametrize("position", ["forward", "reverse"])
def test_positions_exported_to_onnx_match_pytorch(position, tmp_path):
    """The NISER+ variants go through the export's parity gate like the rest (dynamic B and L)."""
    from sessionrec.contract import make_spec
    from sessionrec.export.onnx_export import TrainedEncoder, check_parity, export_onnx
    from sessionrec.families import schema_of
    from sessionrec.serving.encoder import OnnxEncoder

    torch.manual_seed(0)
    model = SessionModel(ModelConfig(n_items=40, dim=16, max_len=8, position=position, gnn_dropout=0.3,
                                     table_dropout=0.2)).eval()
    rng = np.random.default_rng(1)
    sessions = [list(rng.integers(1, 41, size=rng.integers(1, 12))) for _ in range(64)]
    schema = schema_of(model)
    encoder = OnnxEncoder(export_onnx(TrainedEncoder(model), tmp_path / "m.onnx", schema, 8, sessions), threads=1)
    spec = make_spec(TrainedEncoder(model), model.item_embeddings().detach(), np.arange(1, 41), schema.name, 8)
    report = check_parity(spec, encoder, sessions)
    assert report.max_abs_diff < 1e-4 and report.top20_agreement == 1.0


def test_reversed_positions_number_the_last_click_one():
    torch.manual_seed(0)
    model = SessionModel(ModelConfig(n_items=10, dim=8, max_len=6, position="reverse", dropout=0.0)).eval()
    with torch.no_grad():
        model.position.weight.zero_()
        model.position.weight[1].fill_(1.0)  # only position 1 (the last click) moves the vector
        a = model.encode(*tensors([[1, 2, 3]], 6))
        model.position.weight[1].zero_()
        b = model.encode(*tensors([[1, 2, 3]], 6))
    assert not torch.allclose(a, b)
SESSIONS = [[1, 2, 3], [4], [5, 5, 6, 2, 9, 1, 3, 3], [7, 8]]


def tensors(sessions, max_len, pad_to_longest=False):
    g = build_batch(sessions, max_len, pad_to_longest)
    return [torch.from_numpy(x) for x in (g.items, g.alias, g.adj_in, g.adj_out, g.mask)]


@pytest.mark.parametrize("name", VARIANTS)
def test_padding_does_not_change_the_session_vector(name):
    torch.manual_seed(0)
    model = SessionModel(ModelConfig(n_items=10, dim=16, max_len=8, dropout=0.0, **VARIANTS[name])).eval()
    with torch.no_grad():
        short = model.encode(*tensors(SESSIONS, 8, pad_to_longest=True))
        for i, s in enumerate(SESSIONS):  # alone, padded to max_len
            alone = model.encode(*tensors([s], 8))
            torch.testing.assert_close(alone[0], short[i], atol=1e-5, rtol=1e-5)
        scores = model(*tensors(SESSIONS, 8))
    assert short.shape == (4, 16) and scores.shape == (4, 10)
    if model.config.normalize:
        torch.testing.assert_close(short.norm(dim=1), torch.full((4,), model.config.scale))


@pytest.mark.parametrize("name", VARIANTS)
def test_one_epoch_smoke_lowers_the_loss(name):
    """One epoch on a toy task (next item = item + 1) must fit it better than chance."""
    torch.manual_seed(0)
    model = SessionModel(ModelConfig(n_items=20, dim=16, max_len=6, **VARIANTS[name]))
    rng = np.random.default_rng(0)
    starts = rng.integers(1, 15, size=400)
    sessions = [list(range(s, s + rng.integers(1, 5))) for s in starts]
    targets = torch.tensor([s[-1] + 1 for s in sessions])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for b in range(0, 400, 20):
        loss = model(*tensors(sessions[b : b + 20], 6, True), targets=targets[b : b + 20])  # fused, as train() does
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        losses.append(loss.item())
    assert np.mean(losses[-5:]) < np.mean(losses[:3]) - 0.5


def test_empty_session_is_finite():
    model = SessionModel(ModelConfig(n_items=5, dim=8, attention_heads=2)).eval()
    with torch.no_grad():
        out = model.encode(*tensors([[]], 32))
    assert torch.isfinite(out).all()


def test_bad_configs():
    with pytest.raises(ValueError, match="node_update"):
        ModelConfig(n_items=3, node_update="lstm").validate()
    with pytest.raises(ValueError, match="divide"):
        ModelConfig(n_items=3, dim=10, attention_heads=3).validate()
    with pytest.raises(ValueError, match="n_items"):
        ModelConfig().validate()


def make_ckpt():
    config = ModelConfig(n_items=4, dim=8)
    model = SessionModel(config)
    return Checkpoint(config, model.state_dict(), np.array([-1, 11, 12, 13, 14]), np.array([0, 5, 4, 3, 1]))


def test_checkpoint_roundtrip(tmp_path):
    ckpt = make_ckpt()
    path = save_checkpoint(ckpt, tmp_path / "m.pt")
    loaded = load_checkpoint(path)
    assert loaded.model_config == ckpt.model_config
    assert loaded.raw_ids.tolist() == [-1, 11, 12, 13, 14]
    for k, v in ckpt.state_dict.items():
        torch.testing.assert_close(loaded.state_dict[k], v)


def test_bad_checkpoints_name_file_and_problem(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="garbage.pt: not a loadable"):
        load_checkpoint(garbage)
    path = save_checkpoint(make_ckpt(), tmp_path / "t.pt")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CheckpointError, match="truncated.pt"):
        load_checkpoint(truncated)
    other = tmp_path / "other.pt"
    torch.save({"weights": torch.zeros(2)}, other)
    with pytest.raises(CheckpointError, match="not a sessionrec checkpoint"):
        load_checkpoint(other)


class Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_pickled_objects_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"format": "sessionrec-checkpoint", "x": Evil()}, path)
    with pytest.raises(CheckpointError, match="refused for safety"):
        load_checkpoint(path)


def test_incompatible_weights(tmp_path):
    ckpt = make_ckpt()
    ckpt.model_config = ModelConfig(n_items=4, dim=16)
    path = save_checkpoint(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(CheckpointError, match="weights do not match"):
        load_checkpoint(path)


def test_checkpoint_written_before_position_embeddings_loads_as_it_was_trained(tmp_path):
    """position='reverse' became the default later: an old checkpoint (no `position` key) must load as 'none'."""
    import torch

    from sessionrec.checkpoint import LEGACY_VALUES, Checkpoint, load_checkpoint, save_checkpoint

    assert ModelConfig().position == "reverse" and LEGACY_VALUES["srgnn"]["position"] == "none"
    old = SessionModel(ModelConfig(n_items=5, dim=8, max_len=4, position="none"))
    path = save_checkpoint(Checkpoint(ModelConfig(n_items=5, dim=8, max_len=4, position="none"), old.state_dict(),
                                      np.arange(-1, 5), np.ones(6, dtype=np.int64)), tmp_path / "old.pt")
    payload = torch.load(path, weights_only=True)
    del payload["model_config"]["position"]
    torch.save(payload, path)
    assert load_checkpoint(path).model_config.position == "none"

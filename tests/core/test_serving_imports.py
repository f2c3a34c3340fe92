"""The serving image has no torch: everything the Triton model.py files import must work without it."""

import subprocess
import sys

BLOCK_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ModuleNotFoundError("No module named 'torch' (blocked)", name=name)
sys.meta_path.insert(0, Block())
import sessionrec.serving.artifacts, sessionrec.serving.preprocess, sessionrec.serving.retrieval
import sessionrec.serving.encoder, sessionrec.serving.triton_io, sessionrec.serving.pipeline
import sessionrec.export.faiss_index, sessionrec.export.configs
import sessionrec.serving.history, sessionrec.serving.stateful, sessionrec.serving.one_click
assert "torch" not in sys.modules
print("ok")
"""


def test_serving_modules_import_without_torch():
    result = subprocess.run([sys.executable, "-c", BLOCK_TORCH], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"

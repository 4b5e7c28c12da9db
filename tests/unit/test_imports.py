"""Import boundaries: the training code needs torch, not RDKit (GPU machines may lack RDKit)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.unit


def test_training_code_imports_without_rdkit() -> None:
    code = textwrap.dedent(
        """
        import sys

        class Block:
            def find_spec(self, name, path, target=None):
                if name == "rdkit" or name.startswith("rdkit."):
                    raise ImportError("rdkit blocked")
                return None

        sys.meta_path.insert(0, Block())
        from metascreen.models.nn.encoders import EncoderConfig
        from metascreen.models.learners.registry import build_learner
        from metascreen.models.training.policy import train_policy
        from metascreen.models.training.loop import meta_train
        assert "rdkit" not in sys.modules
        try:
            import metascreen.domains.molecules.featurize  # noqa: F401
        except ImportError as err:
            print("featurize needs rdkit:", err)
        else:
            raise SystemExit("the blocker did not work")
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "featurize needs rdkit" in out.stdout

"""A REPA encoder that cannot be loaded is one TrainingError line, whatever torch says about it."""

import pytest

from pixdiff.train.errors import TrainingError
from pixdiff.train.repa import load_encoder


@pytest.mark.parametrize("content", [b"not a torchscript archive", b""])
def test_a_file_that_is_not_an_encoder_is_one_line(tmp_path, content):
    path = tmp_path / "encoder.pt"
    path.write_bytes(content)
    with pytest.raises(TrainingError) as e:
        load_encoder(str(path))
    assert "\n" not in str(e.value) and "TorchScript" in str(e.value) and str(path) in str(e.value)


@pytest.mark.parametrize(("spec", "says"), [("no/such/file.pt", "neither a file nor"),
                                            ("no_such_module_xyz:build", "ModuleNotFoundError")])
def test_a_missing_file_or_factory_is_one_line(spec, says):
    with pytest.raises(TrainingError, match=says) as e:
        load_encoder(spec)
    assert "\n" not in str(e.value)

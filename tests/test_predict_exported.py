"""predict from an exported ONNX file (`ckpt_path=model.onnx`): the file's graph resizes each photo
itself, so the command hands it photos as stored and writes the same kinds of output; options an
exported model cannot honour, and files that are not carvana_seg exports, are refused first."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest

from carvana_seg.config import compose
from carvana_seg.data import rle
from carvana_seg.errors import InputError
from carvana_seg.export import export
from carvana_seg.predict import predict
from tests.conftest import write_photos
from tests.test_predict import predict_cfg, submission_rows


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "car.onnx"
    export(compose("export", [f"ckpt_path={trained[0]}", f"output={path}", "verify=false"]))
    return path


def test_predict_runs_the_onnx_file_like_its_checkpoint(trained, exported, tmp_path):
    test = write_photos(tmp_path)
    # precision=32 (Hydra reads it as a number) is what the exported file runs in anyway
    result = predict(predict_cfg(exported, test, tmp_path / "onnx", "masks=png", "precision=32"))
    predict(predict_cfg(trained[0], test, tmp_path / "ckpt", "masks=none"))
    onnx_rows, ckpt_rows = submission_rows(tmp_path / "onnx"), submission_rows(tmp_path / "ckpt")
    assert result["images"] == 12 and [r[0] for r in onnx_rows] == [r[0] for r in ckpt_rows]
    assert len(list((tmp_path / "onnx" / "masks").iterdir())) == 12
    # The same network: masks differ only along the outline (full-size decode in the graph vs the
    # checkpoint path's reduced JPEG decode).
    for (_, a), (_, b) in zip(onnx_rows[1:], ckpt_rows[1:], strict=True):
        assert (rle.decode(a, (64, 96)) != rle.decode(b, (64, 96))).mean() < 0.03


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["data.image_size=[16,24]"], "data.image_size cannot change an exported model"),
        (["precision=bf16-mixed"], "precision cannot change an exported model"),
    ],
)
def test_options_an_exported_model_cannot_honour_are_refused_first(exported, tmp_path, overrides, message):
    with pytest.raises(InputError, match=message):
        predict(predict_cfg(exported, write_photos(tmp_path), tmp_path / "out", *overrides))
    assert not (tmp_path / "out").exists()


def test_flip_tta_is_the_files_own_and_another_request_is_refused_first(trained, exported, tmp_path):
    test = write_photos(tmp_path)
    with pytest.raises(
        InputError, match=r"tta_hflip=false, but .*car\.onnx was exported with tta_hflip=true"
    ):
        predict(predict_cfg(exported, test, tmp_path / "a", "tta_hflip=false"))
    plain = tmp_path / "plain.onnx"  # exported without it: one pass of the network per photo
    export(
        compose("export", [f"ckpt_path={trained[0]}", f"output={plain}", "verify=false", "tta_hflip=false"])
    )
    with pytest.raises(
        InputError, match=r"tta_hflip=true, but .*plain\.onnx was exported with tta_hflip=false"
    ):
        predict(predict_cfg(plain, test, tmp_path / "b", "tta_hflip=true"))
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    # Left out, tta_hflip is the file's own (files exported before it could be inside run as before).
    assert predict(predict_cfg(plain, test, tmp_path / "onnx", "masks=none"))["images"] == 12
    assert json.loads((tmp_path / "onnx" / "predict.json").read_text())["tta_hflip"] is False
    predict(predict_cfg(trained[0], test, tmp_path / "ckpt", "tta_hflip=false", "masks=none"))
    onnx_rows, ckpt_rows = submission_rows(tmp_path / "onnx"), submission_rows(tmp_path / "ckpt")
    for (_, a), (_, b) in zip(onnx_rows[1:], ckpt_rows[1:], strict=True):
        assert (rle.decode(a, (64, 96)) != rle.decode(b, (64, 96))).mean() < 0.03


def test_a_file_that_is_not_a_carvana_seg_export_is_refused_by_name(tmp_path):
    garbage = tmp_path / "model.onnx"
    garbage.write_bytes(np.random.default_rng(0).bytes(300))
    with pytest.raises(InputError, match=r"model\.onnx is not a model ONNX Runtime can run"):
        predict(predict_cfg(garbage, write_photos(tmp_path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def foreign_graph(exported, path, photo_type: str, rank: int = 4):
    """An ONNX file under our metadata keys whose graph halves the photo (of rank 4; of another rank it
    only casts it to floats): not a carvana_seg export."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    photo_proto = {"uint8": TensorProto.UINT8, "float": TensorProto.FLOAT}[photo_type]
    shape = [1, 3, "h", "w"][4 - rank :]
    photo = helper.make_tensor_value_info("photo", photo_proto, shape)
    nodes = [helper.make_node("Cast", ["photo"], ["light" if rank == 4 else "half"], to=TensorProto.FLOAT)]
    if rank == 4:
        nodes.append(helper.make_node("MaxPool", ["light"], ["half"], kernel_shape=[2, 2], strides=[2, 2]))
    out_shape = [1, 3, "h2", "w2"] if rank == 4 else shape
    half = helper.make_tensor_value_info("half", TensorProto.FLOAT, out_shape)
    graph = helper.make_graph(nodes, "half_size", [photo], [half])
    foreign = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    foreign.ir_version = 8
    helper.set_model_props(foreign, {p.key: p.value for p in onnx.load(exported).metadata_props})
    onnx.save(foreign, path)
    return path


@pytest.mark.parametrize(
    ("photo_type", "rank", "taken"), [("float", 4, "tensor(float)"), ("uint8", 3, "[3, 'h', 'w']")]
)
def test_a_graph_that_takes_another_input_is_refused_before_the_output_folder(
    exported, tmp_path, photo_type, rank, taken
):
    path = foreign_graph(exported, tmp_path / "other.onnx", photo_type, rank)
    with pytest.raises(
        InputError, match=rf"other.onnx takes photo .*{re.escape(taken)}.*not one uint8 photo"
    ):
        predict(predict_cfg(path, write_photos(tmp_path), tmp_path / "out"))
    assert not (tmp_path / "out").exists()


def test_a_foreign_graph_under_our_metadata_keys_is_refused_before_any_mask_is_written(exported, tmp_path):
    path = foreign_graph(exported, tmp_path / "foreign.onnx", "uint8")
    with pytest.raises(
        InputError, match=r"foreign.onnx returns a \(\d+, \d+\) map for the \(\d+, \d+\) photo"
    ):
        predict(predict_cfg(path, write_photos(tmp_path), tmp_path / "out"))
    assert not list((tmp_path / "out").glob("masks/*"))

"""`hwnas supernet train` and `hwnas supernet eval` on a small supernet and the embedded data."""

import json

import pytest
import yaml

from hwnas.cli import main

SMALL = dict(stem_width=8, stage_widths=[8, 16], stage_strides=[1, 2], stage_se=[False, True], head_width=32)


def test_train_then_eval(tmp_path, capsys):
    cfg = tmp_path / "train.yaml"
    out = tmp_path / "net.pt"
    cfg.write_text(yaml.safe_dump({"supernet": "elastic_mbv3", "kwargs": SMALL, "data": "fmnist-mini",
                                   "train_images": 2000, "settings": {"epochs": 1, "batch_size": 256, "num_random": 1, "eval_every": 0},
                                   "out": str(out)}))
    assert main(["supernet", "train", str(cfg), "--quiet"]) == 0
    assert out.is_file() and out.with_suffix(".state").is_file()
    # A second call resumes from the finished state instead of training again.
    assert main(["supernet", "train", str(cfg), "--quiet"]) == 0
    assert "resumed from epoch 1" in capsys.readouterr().out

    report = tmp_path / "eval.json"
    assert main(["supernet", "eval", str(out), "--configs", "largest,smallest,random:3",
                 "--calib-images", "200", "--json", str(report)]) == 0
    result = json.loads(report.read_text())
    assert [c["label"] for c in result["configs"]] == ["largest", "smallest", "random-0", "random-1", "random-2"]
    assert result["random"]["min"] <= result["random"]["median"] <= result["random"]["max"]
    assert result["configs"][0]["accuracy"] > 0.2  # one short epoch already learns beyond chance (0.1)


@pytest.mark.parametrize("doc, fragment", [
    ({"supernet": "elastic_mbv3", "out": "x.pt", "settings": {"epochz": 1}}, "settings.epochz: unknown setting"),
    ({"supernet": "elastic_mbv3"}, "out: required key is missing"),
    ({"supernet": "elastic_mbv3", "out": "x.pt", "colour": 1}, "colour: unknown key"),
])
def test_bad_train_file(tmp_path, capsys, doc, fragment):
    cfg = tmp_path / "train.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    assert main(["supernet", "train", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert not (tmp_path / "x.pt").exists()


def test_eval_rejects_bad_config_list(tmp_path, capsys):
    from hwnas import supernets

    path = tmp_path / "n.pt"
    supernets.save_checkpoint(supernets.create("elastic_mbv3", **SMALL), path, {})
    assert main(["supernet", "eval", str(path), "--configs", "random:0"]) == 2
    assert "random:N" in capsys.readouterr().err


def test_import_timm_weights_then_name_them_in_an_experiment(tmp_path, capsys):
    import timm
    import torch

    from hwnas import supernets
    from hwnas.supernets.loaders import load_timm_mobilenetv3

    torch.manual_seed(0)
    weights = tmp_path / "mobilenetv3_large_100.pth"
    torch.save(timm.create_model("mobilenetv3_large_100", pretrained=False).state_dict(), weights)
    out = tmp_path / "ckpt" / "mbv3.pt"
    assert main(["supernet", "import", str(weights), "--layout", "timm_mobilenetv3_large_100", "--out", str(out)]) == 0
    assert "supernet ofa_mbv3_w1" in capsys.readouterr().out
    net = supernets.load_checkpoint(out)
    assert net.registry_name == "ofa_mbv3_w1" and net.meta["layout"] == "timm_mobilenetv3_large_100"
    for a, b in zip(net.state_dict().values(), load_timm_mobilenetv3(weights).state_dict().values()):
        assert torch.equal(a, b)
    assert sorted(p.name for p in out.parent.iterdir()) == ["mbv3.pt"]  # no temporary file left

    experiment = {"name": "ofa", "space": {"supernet": "ofa_mbv3_w1", "checkpoint": str(out)},
                  "objectives": {"params": "min", "latency_ms": "min"}}
    cfg = tmp_path / "exp.yaml"
    cfg.write_text(yaml.safe_dump(experiment))
    # It validates as far as the data: the default data set is grayscale, the weights take RGB.
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "space.checkpoint" in err and "3-channel" in err and "channels: 3" in err and len(err.splitlines()) == 1
    # A checkpoint holding another supernet than the one named.
    cfg.write_text(yaml.safe_dump({**experiment, "space": {"supernet": "elastic_mbv3", "checkpoint": str(out)}}))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds a 'ofa_mbv3_w1' supernet, not 'elastic_mbv3'" in err and len(err.splitlines()) == 1
    # The shipped checkpoint holds elastic_mbv3: naming another supernet without a checkpoint is an error.
    cfg.write_text(yaml.safe_dump({**experiment, "space": {"supernet": "ofa_mbv3_w1"}}))
    assert main(["validate", str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "space.checkpoint" in err and "elastic_mbv3" in err and len(err.splitlines()) == 1


@pytest.mark.parametrize("content, layout, fragment", [
    (b"not a torch file at all", "ofa_mbv3", "not a torch file"),
    (None, "ofa_mbv3", "411 missing: first_conv.conv.weight, first_conv.bn.weight"),
    (None, "timm_mobilenetv3_large_100", "1 unexpected: encoder.weight"),
    (None, "caffe", "unknown weight layout 'caffe'; allowed: ofa_mbv3, timm_mobilenetv3_large_100"),
])
def test_import_rejects_bad_input_and_writes_nothing(tmp_path, capsys, content, layout, fragment):
    import torch

    source = tmp_path / "weights.pth"
    if content is None:  # a torch file with one unrelated tensor
        torch.save({"encoder.weight": torch.zeros(2, 2)}, source)
    else:
        source.write_bytes(content)
    out = tmp_path / "out" / "net.pt"
    assert main(["supernet", "import", str(source), "--layout", layout, "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert fragment in err and len(err.splitlines()) == 1
    assert layout == "caffe" or str(source) in err
    assert not out.parent.exists()


def test_shipped_checkpoints_by_name(tmp_path, capsys):
    """'fmnist_mbv3' names the shipped Fashion-MNIST supernet wherever a checkpoint path is taken."""
    from hwnas.config import load_config
    from hwnas.devices.spaces import space_slug
    from hwnas.supernets import SHIPPED_CHECKPOINTS, checkpoint_path

    assert main(["supernets", "list"]) == 0
    listed = capsys.readouterr().out
    assert "fmnist_mbv3  elastic_mbv3" in listed and "default      elastic_mbv3" in listed
    path = SHIPPED_CHECKPOINTS["fmnist_mbv3"]
    assert checkpoint_path("fmnist_mbv3") == path and checkpoint_path(str(tmp_path / "x.pt")) == tmp_path / "x.pt"
    # a device profile measured on the path serves a run that names the checkpoint
    assert space_slug("elastic_mbv3:fmnist_mbv3") == space_slug(f"elastic_mbv3:{path}")

    report = tmp_path / "eval.json"
    assert main(["supernet", "eval", "fmnist_mbv3", "--configs", "smallest", "--calib-images", "200",
                 "--json", str(report)]) == 0
    assert json.loads(report.read_text())["configs"][0]["accuracy"] > 0.8  # trained on the full training split

    experiment = tmp_path / "e.yaml"
    experiment.write_text(yaml.safe_dump({"space": {"supernet": "elastic_mbv3", "checkpoint": "fmnist_mbv3"},
                                          "objectives": {"accuracy": "max", "latency_ms": "min"}}))
    assert load_config(experiment).space.checkpoint == "fmnist_mbv3"
    experiment.write_text(yaml.safe_dump({"space": {"supernet": "elastic_resnet", "checkpoint": "fmnist_mbv3"},
                                          "objectives": {"accuracy": "max", "latency_ms": "min"}}))
    assert main(["validate", str(experiment)]) == 2
    assert "holds a 'elastic_mbv3' supernet, not 'elastic_resnet'" in capsys.readouterr().err

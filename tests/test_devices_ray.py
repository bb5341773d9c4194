"""A remote device: `measure` runs on the Ray node that holds the device's custom resource.

The two-node cluster (``ray.cluster_utils.Cluster``: a head node, and a second node offering
``device:remote-cpu``) runs in a child process started and torn down by the fixture, so it
never clashes with the session-wide local Ray other test files share.
"""

import json
import subprocess
import sys

import pytest

pytest.importorskip("ray")

CLUSTER_SCRIPT = r"""
import json, sys
import ray
from ray.cluster_utils import Cluster
from hwnas.devices.measure import measure_device

spec, home = sys.argv[1], sys.argv[2]
cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
try:
    device_node = cluster.add_node(num_cpus=1, resources={"device:remote-cpu": 1})
    cluster.wait_for_nodes()
    ray.init(address=cluster.address, log_to_driver=False)
    result = measure_device("remote-cpu", spec, "torch-cpu", batch_size=2, threads=1, home=home,
                            ray_resource="device:remote-cpu", warmup=1, repeats=3, max_repeats=3)
    # A run on that device measures its latency on that node too.
    import os, pathlib, yaml
    from hwnas.config import load_config
    from hwnas.pipeline import Experiment
    os.environ["HWNAS_HOME"] = str(pathlib.Path(home).parent)
    run_dir = pathlib.Path(home).parent / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text(yaml.safe_dump({
        "name": "on-node", "space": {"supernet": "elastic_mbv3", "checkpoint": spec.partition(":")[2]},
        "devices": [{"name": "remote-cpu", "warmup": 1, "repeats": 3}],
        "objectives": {"accuracy": "max", "latency_ms": "min"},
        "strategy": {"name": "random", "population": 6, "generations": 1, "seed": 1},
        "executor": {"kind": "ray", "address": cluster.address, "workers": 1},
        "accuracy_eval": {"calib_images": 20, "images": 50}}))
    exp = Experiment(load_config(run_dir / "config.yaml"), run_dir)
    try:
        summary = exp.run()
        run = {"measured": [c.measured for c in exp.store.candidates()],
               "latency_nodes": exp.space_backend.on_nodes["remote-cpu"].nodes(),
               "where": exp.locations["remote-cpu"].where}
    finally:
        exp.close()
    print("RESULT " + json.dumps({"ran_on": result["node"], "device_node": device_node.node_id,
                                  "head_node": cluster.head_node.node_id, "entries": result["entries"],
                                  "run": run}))
finally:
    ray.shutdown()
    cluster.shutdown()
"""


@pytest.fixture(scope="session")
def remote_measurement(tmp_path_factory):
    from hwnas import supernets

    tmp = tmp_path_factory.mktemp("ray_device")
    net = supernets.create("elastic_mbv3", stage_widths=(8,), stage_strides=(1,), stage_se=(False,), min_depth=1,
                           max_depth=2, kernel_sizes=(3, 5), expand_ratios=(2, 3), resolutions=(12,),
                           stem_width=8, head_width=16)
    spec = f"elastic_mbv3:{supernets.save_checkpoint(net, tmp / 'tiny.pt')}"
    home = tmp / "devices"
    proc = subprocess.run([sys.executable, "-c", CLUSTER_SCRIPT, spec, str(home)], capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and lines, proc.stderr[-3000:]
    return spec, home, json.loads(lines[-1][len("RESULT "):])


def test_measure_runs_on_the_node_with_the_device_resource(remote_measurement):
    from hwnas.devices.predictors import cost_model
    from hwnas.devices.registry import get_device

    spec, home, result = remote_measurement
    assert result["ran_on"] == result["device_node"] != result["head_node"]
    profile = get_device("remote-cpu", home)
    assert profile.spec.ray_resource == "device:remote-cpu" and profile.spec.backend == "torch-cpu"
    assert len(profile.samples(spec)) == 32 and profile.file("lut", spec, "json").is_file()  # every sub-network of the tiny space (< 40)
    model = cost_model("remote-cpu", spec, home)
    assert model.method.startswith("per-block lookup table") and len(model.table) == result["entries"]


def test_a_run_measures_the_device_on_its_node(remote_measurement):
    _, _, result = remote_measurement
    run = result["run"]
    assert run["latency_nodes"] == [result["device_node"]]  # the latency actor sits on the device's node
    assert "device:remote-cpu" in run["where"]
    assert len(run["measured"]) >= 3 and all(v["latency_ms"] > 0 and 0 <= v["accuracy"] <= 1 for v in run["measured"])

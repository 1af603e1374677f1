"""Multi-node training templates (rai.cluster): they render and parse for any N nodes x G GPUs,
refuse the classic mistakes, and the accelerate configuration really runs across two
"machines" (two launchers on this host, CPU and gloo)."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from rai.cluster import launch_plan, render_accelerate_config, render_sbatch

LAYOUTS = [(1, 1), (1, 4), (2, 4), (4, 8), (16, 8)]


@pytest.mark.parametrize("nodes,gpus", LAYOUTS)
def test_batch_script_renders_parses_and_tiles_the_ranks(nodes, gpus):
    text = render_sbatch(nodes, gpus, partition="a100", time="02:00:00")
    assert subprocess.run(["bash", "-n"], input=text, text=True).returncode == 0
    directives = dict(line[len("#SBATCH --"):].split("=", 1) for line in text.splitlines()
                      if line.startswith("#SBATCH --"))
    assert directives["nodes"] == str(nodes) and directives["gres"] == f"gpu:{gpus}"
    assert directives["cpus-per-task"] == str(8 * gpus) and directives["partition"] == "a100"
    hosts = [f"gpu{i:03d}" for i in range(nodes)]
    plan = launch_plan(text, hosts)
    assert [p["machine_rank"] for p in plan] == list(range(nodes))
    assert {p["num_processes"] for p in plan} == {nodes * gpus}
    assert {p["main_process"].split(":")[0] for p in plan} == {"gpu000"}


@pytest.mark.parametrize("nodes,gpus", LAYOUTS)
def test_accelerate_config_loads_with_accelerates_own_loader(nodes, gpus, tmp_path):
    from accelerate.commands.config.config_args import ClusterConfig

    path = tmp_path / "config.yaml"
    path.write_text(render_accelerate_config(nodes, gpus, mixed_precision="bf16"))
    config = ClusterConfig.from_yaml_file(str(path))
    assert config.num_machines == nodes and config.num_processes == nodes * gpus
    assert config.mixed_precision == "bf16"
    assert config.distributed_type.value == ("MULTI_GPU" if nodes * gpus > 1 else "NO")
    path.write_text(render_accelerate_config(nodes, gpus, mixed_precision="no"))
    assert ClusterConfig.from_yaml_file(str(path)).mixed_precision == "no"   # a string, not YAML's false


def test_the_classic_mistakes_are_refused():
    good = render_sbatch(2, 4)
    with pytest.raises(ValueError, match="one launcher per node"):
        launch_plan(good.replace("--ntasks-per-node=1", "--ntasks-per-node=4"), ["a", "b"])
    double_quoted = good.replace("bash -c '", 'bash -c "').replace("{script_args}'", '')
    double_quoted = double_quoted[:double_quoted.rindex("'")] + '"' + double_quoted[double_quoted.rindex("'") + 1:]
    with pytest.raises(ValueError, match="single quotes"):
        launch_plan(double_quoted, ["a", "b"])
    with pytest.raises(ValueError):
        render_sbatch(0, 4)
    with pytest.raises(ValueError, match="single quote"):
        render_sbatch(2, 4, script_args="--name 'x'")


def test_render_command_writes_both_files(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rai.cluster", "render", "--nodes", "2", "--gpus-per-node", "4",
                          "--output", str(tmp_path)], capture_output=True, text=True, check=True)
    script, config = (Path(line) for line in out.stdout.split())
    assert script.name == "train-2x4.sbatch" and "#SBATCH --nodes=2" in script.read_text()
    assert "num_processes: 8" in config.read_text()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_the_config_trains_across_two_machines(tmp_path):
    """Two `accelerate launch`es with the rendered config, machine ranks 0 and 1, meet at the
    main process and train one data-parallel model (world size 2): what each node of a job does."""
    from rai.places import write_miniature_places365

    data = tmp_path / "places365"
    write_miniature_places365(data, n_train_per_class=8, n_val_per_class=3, image_size=32)
    config = tmp_path / "two-machines.yaml"
    config.write_text(render_accelerate_config(2, 1, mixed_precision="no", main_process_ip="127.0.0.1",
                                               main_process_port=_free_port()))
    accelerate = str(Path(sys.executable).parent / "accelerate")
    env = {**os.environ, "GLOO_SOCKET_IFNAME": "lo", "OMP_NUM_THREADS": "1"}
    procs = []
    for rank in (0, 1):
        procs.append(subprocess.Popen(
            [accelerate, "launch", "--config_file", str(config), "--machine_rank", str(rank),
             "-m", "rai.cluster", "train-places", "--data-root", str(data), "--generate", "--image-size", "32",
             "--epochs", "1", "--output", str(tmp_path / f"machine{rank}" / "model.pt")],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=tmp_path))
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], "\n".join(outputs)
    summary = json.loads((tmp_path / "machine0" / "model.json").read_text())
    assert summary["world_size"] == 2
    assert "done: 2 processes" in outputs[0]
    assert not (tmp_path / "machine1" / "model.json").exists()      # only the main process saves

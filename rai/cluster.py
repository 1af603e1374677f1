"""Multi-node training templates: an ``sbatch`` script and an ``accelerate`` configuration
for N nodes x G GPUs, and a training script they launch.

The workshop chapter *Running on a cluster* renders and explains these; the
tests render them for several N and G, check that they parse (``bash -n``,
accelerate's own config loader, the launch plan every node would see) and run
the configuration for real as two "machines" on one host (CPU, gloo).

* :func:`render_sbatch` -- one Slurm job: N whole nodes, one task per node
  (``accelerate launch``, which starts the node's G processes), the rendezvous
  address taken from the job's first node at run time.
* :func:`render_accelerate_config` -- the YAML file ``accelerate launch
  --config_file`` reads; ``machine_rank`` and ``main_process_ip`` are set per node
  on the command line, as the batch script does.
* :func:`launch_plan` -- what each node's ``accelerate launch`` would be told,
  checked against the ``#SBATCH`` request (one launcher per node, ranks tiling
  ``0 .. N*G-1``).
* ``python -m rai.cluster render ...`` writes both files; ``python -m rai.cluster
  train-places ...`` is the training script they launch: the Places365 CNN of the
  workshop (:mod:`rai.places`), on the real data set under ``--data-root`` or a
  generated miniature.

Example
-------
>>> text = render_sbatch(2, 4)
>>> [p["machine_rank"] for p in launch_plan(text, ["gpu017", "gpu018"])]
[0, 1]
>>> import yaml
>>> yaml.safe_load(render_accelerate_config(2, 4))["num_processes"]
8
"""
from __future__ import annotations

import argparse
import re
import shlex
import sys
from pathlib import Path

SBATCH_TEMPLATE = """\
#!/bin/bash
#SBATCH --job-name={job_name}
#SBATCH --partition={partition}
#SBATCH --nodes={nodes}
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:{gpus_per_node}
#SBATCH --cpus-per-task={cpus_per_node}
#SBATCH --mem={mem_per_node}
#SBATCH --time={time}
#SBATCH --output=%x-%j.out

set -euo pipefail
module purge
module load {modules}
source {venv}/bin/activate

export GPUS_PER_NODE={gpus_per_node}
export MAIN_PROCESS_IP=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
export MAIN_PROCESS_PORT=$((29500 + SLURM_JOB_ID % 1000))

srun --kill-on-bad-exit=1 --cpus-per-task="$SLURM_CPUS_PER_TASK" bash -c 'accelerate launch \\
    --multi_gpu \\
    --num_machines $SLURM_NNODES \\
    --machine_rank $SLURM_NODEID \\
    --num_processes $((SLURM_NNODES*GPUS_PER_NODE)) \\
    --main_process_ip $MAIN_PROCESS_IP \\
    --main_process_port $MAIN_PROCESS_PORT \\
    --mixed_precision {mixed_precision} \\
    {script} {script_args}'
"""

DEFAULT_SCRIPT = "-m rai.cluster train-places"
DEFAULT_ARGS = "--data-root $TMPDIR/places365 --epochs 30 --batch-size 128 --model resnet18 --image-size 224"


def render_sbatch(nodes: int, gpus_per_node: int, *, job_name: str = "places365", partition: str = "gpu",
                  cpus_per_gpu: int = 8, mem_per_node: str = "240G", time: str = "04:00:00",
                  modules: str = "cuda/12.4", venv: str = '"$HOME/venvs/rai"', mixed_precision: str = "bf16",
                  script: str = DEFAULT_SCRIPT, script_args: str = DEFAULT_ARGS) -> str:
    """The batch script of one multi-node training job (see the workshop chapter for each line)."""
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU per node, not {nodes} x {gpus_per_node}")
    if "'" in script + script_args:
        raise ValueError("the training command cannot contain a single quote (the launch line is quoted with them)")
    return SBATCH_TEMPLATE.format(
        job_name=job_name, partition=partition, nodes=nodes, gpus_per_node=gpus_per_node,
        cpus_per_node=cpus_per_gpu * gpus_per_node, mem_per_node=mem_per_node, time=time, modules=modules,
        venv=venv, mixed_precision=mixed_precision, script=script, script_args=script_args)


def render_accelerate_config(nodes: int, gpus_per_node: int, *, mixed_precision: str = "bf16",
                             main_process_ip: str = "localhost", main_process_port: int = 29500,
                             machine_rank: int = 0) -> str:
    """The ``accelerate launch --config_file`` YAML for ``nodes`` x ``gpus_per_node`` processes.

    ``num_processes`` is the total over all machines (the value most often wrong).  On a host
    without GPUs the same file runs its processes on CPU cores with gloo (how the tests run two
    "machines" on one host): accelerate's own ``MULTI_CPU`` type would need MPI across machines.
    """
    if nodes < 1 or gpus_per_node < 1:
        raise ValueError(f"need at least one node and one GPU per node, not {nodes} x {gpus_per_node}")
    total = nodes * gpus_per_node
    lines = [
        "compute_environment: LOCAL_MACHINE",
        f"distributed_type: '{'MULTI_GPU' if total > 1 else 'NO'}'   # quoted: a bare NO is YAML's false",
        f"num_machines: {nodes}",
        f"num_processes: {total}          # the TOTAL over all machines",
        f"machine_rank: {machine_rank}            # each node passes its own: --machine_rank $SLURM_NODEID",
        "gpu_ids: all",
        f"main_process_ip: {main_process_ip}     # each job passes its first node: --main_process_ip",
        f"main_process_port: {main_process_port}",
        "rdzv_backend: static",
        "same_network: true",
        f"mixed_precision: '{mixed_precision}'   # quoted: YAML reads a bare no as false",
        "main_training_function: main",
        "use_cpu: false",
    ]
    return "\n".join(lines) + "\n"


def _expand(word: str, env: dict[str, str]) -> str:
    """The two kinds of shell expansion the launch line uses: $((A*B)) and $VAR."""
    word = re.sub(r"\$\(\((\w+)\*(\w+)\)\)", lambda m: str(int(env[m[1]]) * int(env[m[2]])), word)
    return re.sub(r"\$(\w+)", lambda m: env[m[1]], word)


def launch_plan(text: str, hostnames: list[str]) -> list[dict]:
    """What each node's ``accelerate launch`` would be told, checked against the ``#SBATCH`` request."""
    sbatch = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", text, flags=re.M))
    nodes, gpus = int(sbatch["nodes"]), int(sbatch["gres"].split(":")[-1])
    if sbatch.get("ntasks-per-node") != "1":
        raise ValueError("one launcher per node: --ntasks-per-node must be 1 (accelerate starts the G processes)")
    if len(hostnames) != nodes:
        raise ValueError(f"{len(hostnames)} host names for {nodes} nodes")
    launch = re.search(r"bash -c '(.*?)'", text, flags=re.S)
    if launch is None:
        raise ValueError("no launch line in single quotes: the batch shell would expand $SLURM_NODEID once, for all")
    words = shlex.split(launch[1].replace("\\\n", " "))
    if words[:2] != ["accelerate", "launch"]:
        raise ValueError(f"the launch line starts {words[:2]}, not accelerate launch")
    plan = []
    for node_id, host in enumerate(hostnames):
        env = {"SLURM_NNODES": str(nodes), "SLURM_NODEID": str(node_id), "GPUS_PER_NODE": str(gpus),
               "MAIN_PROCESS_IP": hostnames[0], "MAIN_PROCESS_PORT": "29723", "TMPDIR": "/local/job"}
        argv = [_expand(w, env) for w in words]
        opts = {argv[i][2:]: argv[i + 1] for i in range(2, len(argv) - 1)
                if argv[i].startswith("--") and not argv[i + 1].startswith("--")}
        rank, world = int(opts["machine_rank"]), int(opts["num_processes"])
        plan.append({"node": host, "machine_rank": rank, "num_machines": int(opts["num_machines"]),
                     "num_processes": world, "main_process": f'{opts["main_process_ip"]}:{opts["main_process_port"]}',
                     "global ranks": f"{rank * gpus}–{rank * gpus + gpus - 1}"})
    problems = []
    if not all(p["num_processes"] == nodes * gpus and p["num_machines"] == nodes for p in plan):
        problems.append("the nodes disagree with the request on the number of machines or processes")
    if sorted(p["machine_rank"] for p in plan) != list(range(nodes)):
        problems.append("machine ranks do not tile 0..N-1")
    if len({p["main_process"] for p in plan}) != 1:
        problems.append("the nodes do not agree on the main process")
    if problems:
        raise ValueError("; ".join(problems))
    return plan


# --------------------------------------------------------------------------- the training script
def _step(model, images, labels, optimizer, accelerator):
    import torch.nn.functional as F

    losses = F.cross_entropy(model(images).float(), labels, reduction="none")
    accelerator.backward(losses.mean())
    optimizer.step()
    optimizer.zero_grad()
    return losses.detach()


def _evaluate(model, loader, accelerator):
    import torch

    model.eval()
    logits, labels = [], []
    with torch.no_grad():
        for images, targets in loader:
            out, targets = accelerator.gather_for_metrics((model(images), targets))
            logits.append(out.float().cpu())
            labels.append(targets.cpu())
    return torch.cat(logits), torch.cat(labels)


def train_places_main(args: argparse.Namespace) -> int:
    """Run by every process ``accelerate launch`` starts, on every node."""
    import json

    import torch

    from . import places

    root = Path(args.data_root)
    real = not args.generate
    if args.generate and not (root / "categories_places365.txt").exists():
        from accelerate import PartialState

        state = PartialState()
        if state.is_local_main_process:     # one writer per node (the directory may be node-local)
            places.write_miniature_places365(root, n_train_per_class=args.per_class,
                                             n_val_per_class=max(args.per_class // 3, 1), image_size=args.image_size)
        state.wait_for_everyone()
    config = dict(root=str(root), real=real, model_name=args.model, widths=(16, 32), image_size=args.image_size,
                  epochs=args.epochs, batch_size=args.batch_size, eval_batch_size=args.batch_size, lr=args.lr,
                  weight_decay=1e-4, num_processes=0, mixed_precision=args.mixed_precision,
                  num_workers=args.num_workers, seed=args.seed, progress=True)
    output = Path(args.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    places._worker(_step, _evaluate, config, str(output))
    from accelerate import PartialState

    state = PartialState()
    if state.is_main_process:
        saved = torch.load(output, map_location="cpu", weights_only=False)
        summary = {"world_size": state.num_processes, "val_top1": saved["history"]["val_top1"][-1],
                   "train_loss": saved["history"]["train_loss"]}
        output.with_suffix(".json").write_text(json.dumps(summary))
        print(f"done: {state.num_processes} processes, validation top-1 {summary['val_top1']:.3f}", flush=True)
    return 0


def render_main(args: argparse.Namespace) -> int:
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    script = out / f"train-{args.nodes}x{args.gpus_per_node}.sbatch"
    script.write_text(render_sbatch(args.nodes, args.gpus_per_node, partition=args.partition, time=args.time,
                                    mixed_precision=args.mixed_precision))
    config = out / f"accelerate-{args.nodes}x{args.gpus_per_node}.yaml"
    config.write_text(render_accelerate_config(args.nodes, args.gpus_per_node, mixed_precision=args.mixed_precision))
    print(f"{script}\n{config}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rai.cluster", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("render", help="write the sbatch script and the accelerate config for N nodes x G GPUs")
    p.add_argument("--nodes", type=int, required=True)
    p.add_argument("--gpus-per-node", type=int, required=True)
    p.add_argument("--partition", default="gpu")
    p.add_argument("--time", default="04:00:00")
    p.add_argument("--mixed-precision", default="bf16", choices=["no", "fp16", "bf16"])
    p.add_argument("--output", default=".")
    p.set_defaults(func=render_main)
    p = sub.add_parser("train-places", help="the training script: run it with accelerate launch")
    p.add_argument("--data-root", required=True, help="Places365 (small images) or where to generate a miniature")
    p.add_argument("--generate", action="store_true", help="generate a miniature at --data-root if it is empty")
    p.add_argument("--per-class", type=int, default=30, help="miniature: training images per class")
    p.add_argument("--model", default="gapcnn", choices=["gapcnn", "resnet18", "resnet50"])
    p.add_argument("--image-size", type=int, default=64)
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--batch-size", type=int, default=32, help="per process")
    p.add_argument("--lr", type=float, default=0.01)
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--mixed-precision", default="no", choices=["no", "fp16", "bf16"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="places365-run/model.pt")
    p.set_defaults(func=train_places_main)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

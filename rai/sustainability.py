"""Support code for the workshop lab *Sustainable AI* (``ws-sustainable``).

Learners import these helpers; they are not asked to write them.  They cover
the plumbing of the lab -- running CodeCarbon quietly and offline, training one
configuration under a tracker, turning what the tracker saw into plain data,
the figures -- not the ideas it practises (the emissions formula, the
comparison table, the Pareto front and the report are the learner's):

* :func:`quiet_codecarbon` -- CodeCarbon logs at INFO level from its import on,
  and before a tracker's own ``log_level`` applies; this silences it;
* :func:`carbon_intensity`, :func:`carbon_intensities` -- the yearly carbon
  intensity of a country's electricity, read from the data CodeCarbon ships
  (the table its offline tracker uses: nothing is downloaded);
* :func:`offline_tracker` -- an :class:`codecarbon.OfflineEmissionsTracker`
  with the lab's settings;
* :func:`tracker_record` -- the tracker's final measurement as a plain
  ``dict`` (the fields of CodeCarbon's ``emissions.csv``);
* :func:`measurement_method`, :func:`describe_method` -- *how* CodeCarbon
  obtained its numbers on this machine (RAPL counters, an estimate from the CPU
  load and a rated power, a constant; NVML for GPUs; a model for memory), read
  from the tracker, and what that means for their accuracy;
* :func:`measure_idle` -- the same tracker over a period in which nothing
  runs: the machine's idle power, as CodeCarbon sees it;
* :func:`configurations`, :func:`measure_training` -- the grid of training
  configurations (batch size x mixed precision x number of processes) and one
  measured training run of it with :func:`rai.training.train_classifier`;
* :func:`plot_pareto`, :func:`plot_energy_by_configuration`,
  :func:`plot_location` -- the lab's figures (each returns its Figure);
* :func:`hardware_description`, :func:`render_report` -- the hardware line of
  a report, and a reporting record as a Markdown table.

CodeCarbon on Linux measures the CPU with RAPL only where
``/sys/class/powercap`` is readable (often root only, and absent in virtual
machines and in the grading sandbox); otherwise it *estimates* CPU power from
the CPU load and a rated power (TDP) looked up for the CPU model -- or 4 W per
thread when the model is not in its table.  Memory power is always a model
(about 5 W per estimated memory module, from the memory size), and GPUs are
measured through NVML.  :func:`describe_method` says which case a run is in.
"""
from __future__ import annotations

import logging
import os
import time
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

__all__ = [
    "RECORD_FIELDS", "quiet_codecarbon", "carbon_intensity", "carbon_intensities", "offline_tracker",
    "tracker_record", "measurement_method", "describe_method", "measure_idle", "run_name",
    "configurations", "measure_training", "plot_pareto", "plot_energy_by_configuration",
    "plot_location", "hardware_description", "render_report",
]

#: The fields of CodeCarbon's ``EmissionsData`` (one row of ``emissions.csv``) that
#: :func:`tracker_record` keeps.  Units: ``duration`` s; ``*_power`` W (averages over the
#: run); ``*_energy`` and ``energy_consumed`` kWh; ``emissions`` kg CO2e.
RECORD_FIELDS = (
    "run_id", "project_name", "duration", "energy_consumed", "emissions", "cpu_energy", "ram_energy",
    "gpu_energy", "cpu_power", "ram_power", "gpu_power", "country_iso_code", "country_name", "cpu_model",
    "cpu_count", "gpu_model", "gpu_count", "ram_total_size", "tracking_mode", "pue", "codecarbon_version",
)

#: What CodeCarbon calls its CPU modes, in words, and how much to trust each.
_CPU_MODES = {
    "intel_rapl": ("measured: RAPL energy counters of the processor package (Linux powercap)",
                   "a measurement of the package's energy -- the whole package, other users' work included"),
    "cpu_load": ("estimated: rated power (TDP) x a function of the CPU load (psutil)",
                 "an estimate; its scale rests entirely on the rated power assumed for this CPU"),
    "constant": ("estimated: a constant share of the rated power (TDP), whatever the load",
                 "an estimate that does not depend on what the CPU does at all"),
    "intel_power_gadget": ("measured: Intel Power Gadget", "a measurement of the package's energy"),
    "windows_emi": ("measured: the Windows Energy Meter Interface (RAPL)", "a measurement of the package's energy"),
    "apple_silicon_chip": ("measured: powermetrics", "a measurement of the chip's energy"),
}


@lru_cache(maxsize=1)
def _physical_cpus_quietly() -> int:
    """CodeCarbon's count of CPU sockets (``lscpu``'s ``Socket(s):``), without ``lscpu``'s stderr.

    Where ``/sys`` is hidden (the grading sandbox) ``lscpu`` prints an error on the inherited
    stderr for every tracker; CodeCarbon then falls back to 1 socket, as this does.
    """
    import subprocess

    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 1
    for line in out.splitlines():
        if line.startswith("Socket(s):"):
            try:
                return int(line.split(":", 1)[1])
            except ValueError:
                return 1
    return 1


def quiet_codecarbon(level: int = logging.ERROR) -> None:
    """Make CodeCarbon log only errors (its trackers' ``log_level`` applies too late).

    Also makes its socket count (run at every tracker's creation) silent and run once.
    """
    os.environ["CODECARBON_LOG_LEVEL"] = logging.getLevelName(level).lower()
    import codecarbon  # noqa: F401  -- its import sets the logger to INFO
    import codecarbon.emissions_tracker as tracker_module

    logging.getLogger("codecarbon").setLevel(level)
    if getattr(tracker_module, "count_physical_cpus", None) is not None:
        tracker_module.count_physical_cpus = _physical_cpus_quietly


@lru_cache(maxsize=1)
def _energy_mix() -> dict:
    from codecarbon.input import DataSource

    return DataSource().get_global_energy_mix_data()


def carbon_intensity(country_iso_code: str) -> float:
    """Carbon intensity of the country's electricity, g CO2e per kWh, as CodeCarbon uses it offline.

    The value comes from the ``global_energy_mix.json`` table shipped with CodeCarbon (yearly
    averages, from Ember and Our World in Data): exactly what an ``OfflineEmissionsTracker``
    with this ``country_iso_code`` multiplies the energy by.  Unknown codes raise ``KeyError``
    (CodeCarbon itself would silently use a world average).

    >>> round(carbon_intensity("FRA")) < round(carbon_intensity("POL"))
    True
    """
    code = str(country_iso_code).upper()
    mix = _energy_mix()
    if code not in mix or mix[code].get("carbon_intensity") is None:
        raise KeyError(f"CodeCarbon has no carbon intensity for the ISO 3166-1 alpha-3 code {code!r}")
    return float(mix[code]["carbon_intensity"])


def carbon_intensities(codes: Iterable[str]) -> pd.DataFrame:
    """One row per country code: ``country``, ``g_co2e_per_kwh`` and the ``year`` of the data."""
    rows = {}
    for code in codes:
        code = str(code).upper()
        entry = _energy_mix().get(code, {})
        rows[code] = {"country": entry.get("country_name", "?"), "g_co2e_per_kwh": carbon_intensity(code),
                      "year": int(entry.get("year", 0))}
    return pd.DataFrame.from_dict(rows, orient="index")


def offline_tracker(country_iso_code: str, *, project_name: str = "ws-sustainable",
                    output_dir: str | os.PathLike | None = None, measure_power_secs: float = 1.0,
                    tracking_mode: str = "machine"):
    """An ``OfflineEmissionsTracker`` for one run: no network, the location given, quiet.

    It measures IT power only (``pue=1.0``): the data centre's overhead is an assumption of the
    report, applied afterwards.  With ``output_dir`` it appends the run's row to
    ``output_dir/emissions.csv``; without it nothing is written.
    """
    quiet_codecarbon()
    from codecarbon import OfflineEmissionsTracker

    if output_dir is not None:
        Path(output_dir).mkdir(parents=True, exist_ok=True)
    return OfflineEmissionsTracker(
        country_iso_code=str(country_iso_code).upper(), project_name=project_name,
        output_dir=str(output_dir) if output_dir is not None else ".", save_to_file=output_dir is not None,
        measure_power_secs=float(measure_power_secs), tracking_mode=tracking_mode, pue=1.0,
        log_level="error",
    )


def _plain(value: Any) -> Any:
    """numpy scalars to Python ones; anything else that is not plain data to str."""
    if value is None or type(value) in (bool, int, float, str):
        return value
    if isinstance(value, np.generic):
        return value.item()
    return str(value)


def tracker_record(tracker, **extra: Any) -> dict:
    """The stopped tracker's final measurement as a plain ``dict`` (see :data:`RECORD_FIELDS`).

    Keyword arguments are added to it (the configuration, the accuracy).
    """
    data = tracker.final_emissions_data
    if data is None:
        raise RuntimeError("the tracker has no final measurement: call tracker.stop() first")
    record = {name: _plain(getattr(data, name, None)) for name in RECORD_FIELDS}
    for name in ("duration", "energy_consumed", "emissions", "cpu_energy", "ram_energy", "gpu_energy",
                 "cpu_power", "ram_power", "gpu_power", "ram_total_size", "pue"):
        record[name] = float(record[name] or 0.0)
    for name in ("cpu_count", "gpu_count"):
        record[name] = int(record[name] or 0)
    record.update({key: _plain(value) for key, value in extra.items()})
    return record


@lru_cache(maxsize=4)
def _cpu_model_known(model: str) -> bool:
    """Whether CodeCarbon's table of rated powers knows this CPU model (else: 4 W per thread)."""
    try:
        from codecarbon.core.cpu import TDP

        return TDP.__new__(TDP)._get_cpu_power_from_registry(model) is not None
    except Exception:  # noqa: BLE001 -- a private API; unknown is the safe answer
        return False


def measurement_method(tracker) -> dict:
    """How CodeCarbon measures on this machine, read from a tracker that has been started.

    Returns a plain dict: ``cpu_mode`` (CodeCarbon's name: ``intel_rapl``, ``cpu_load``,
    ``constant``, ...), ``cpu_method`` (in words), ``cpu_model``, ``cpu_rated_power_w`` (the TDP
    an estimate scales with; None when measured), ``cpu_model_in_table`` (False: the rated
    power is CodeCarbon's fallback of 4 W per thread), ``ram_method``, ``ram_total_gb``,
    ``gpu_method``, ``gpu_model``, ``gpu_count``, ``tracking_mode``, ``rapl_readable``.
    """
    hardware = list(getattr(tracker, "_hardware", []) or [])
    conf = dict(getattr(tracker, "_conf", {}) or {})
    cpu = next((h for h in hardware if type(h).__name__ in ("CPU", "AppleSiliconChip", "Raspberry")), None)
    ram = next((h for h in hardware if type(h).__name__ == "RAM"), None)
    gpu = next((h for h in hardware if type(h).__name__ == "GPU"), None)
    cpu_mode = str(getattr(cpu, "_mode", type(cpu).__name__ if cpu is not None else "none"))
    model = str(conf.get("cpu_model") or getattr(cpu, "_model", "") or "unknown")
    tdp = getattr(cpu, "_tdp", None)
    estimated = cpu_mode in ("cpu_load", "constant")
    if ram is not None and getattr(ram, "_force_ram_power", None) is not None:
        ram_method = f"assumed: a constant {float(ram._force_ram_power):.1f} W (force_ram_power)"
    else:
        ram_method = "estimated: a power model of the memory size (about 5 W per estimated module)"
    return {
        "cpu_mode": cpu_mode,
        "cpu_method": _CPU_MODES.get(cpu_mode, (f"CodeCarbon mode {cpu_mode!r}", ""))[0],
        "cpu_model": model,
        "cpu_count": int(conf.get("cpu_count") or 0),
        "cpu_rated_power_w": float(tdp) if (estimated and tdp is not None) else None,
        "cpu_model_in_table": _cpu_model_known(model) if estimated else True,
        "ram_method": ram_method,
        "ram_total_gb": float(conf.get("ram_total_size") or 0.0),
        "gpu_method": "measured: NVML (pynvml), the GPUs' own power readings" if gpu is not None else "no GPU seen",
        "gpu_model": str(conf.get("gpu_model") or ""),
        "gpu_count": int(conf.get("gpu_count") or 0),
        "tracking_mode": str(conf.get("tracking_mode") or getattr(tracker, "_tracking_mode", "machine")),
        "rapl_readable": _rapl_readable(),
    }


def _rapl_readable() -> bool:
    base = Path("/sys/class/powercap")
    try:
        return any(os.access(p / "energy_uj", os.R_OK) for p in base.glob("intel-rapl:*"))
    except OSError:
        return False


def describe_method(method: Mapping[str, Any], ram_power_w: float | None = None) -> str:
    """A Markdown paragraph that says how the numbers were obtained and how far to trust them."""
    lines = ["**How CodeCarbon measured in this run**", ""]
    lines.append(f"- **CPU** ({method['cpu_model']}, {method['cpu_count']} threads): {method['cpu_method']}.")
    mode = method["cpu_mode"]
    if mode == "cpu_load":
        rated = method["cpu_rated_power_w"]
        where = ("from CodeCarbon's table of CPU models" if method["cpu_model_in_table"] else
                 f"**not** a rating of this CPU: the model name {method['cpu_model']!r} is not in CodeCarbon's "
                 "table, so it assumed 4 W per thread")
        lines.append(f"  The rated power is {rated:.0f} W ({where}); the estimate is "
                     f"{rated:.0f} W x (0.1 + 0.9 x load³) for the whole machine, the load being the "
                     "share of busy CPU time of *all* processes (psutil). So the CPU part is a model of the "
                     "load, not a measurement of energy.")
    elif mode == "constant":
        lines.append("  The CPU part is proportional to the duration alone.")
    elif mode == "intel_rapl":
        lines.append("  RAPL counts the processor package's energy, including everything else that ran on it.")
    if not method.get("rapl_readable", False) and mode != "intel_rapl":
        lines.append("  (RAPL counters are not readable here: `/sys/class/powercap` is absent or root-only, "
                     "as in most virtual machines and in the grading sandbox.)")
    ram = f"- **Memory** ({method['ram_total_gb']:.1f} GB): {method['ram_method']}"
    if ram_power_w is not None:
        ram += f", here {ram_power_w:.1f} W whatever the program does"
    lines.append(ram + ".")
    gpu = f"- **GPU**: {method['gpu_method']}"
    if method["gpu_count"]:
        gpu += f" ({method['gpu_model']})"
    lines.append(gpu + ".")
    lines.append(f"- **Scope**: tracking mode `{method['tracking_mode']}` -- "
                 + ("the whole machine, other users' and other processes' work included."
                    if method["tracking_mode"] == "machine" else
                    "this process and its children, estimated from their share of the CPU time."))
    if mode in ("cpu_load", "constant"):
        lines += ["", "Read the energies below as **estimates proportional mostly to the duration**: "
                  "differences between configurations come from how long they ran and, a little, from how "
                  "busy the CPU was; the absolute values carry the uncertainty of the assumed rated power "
                  "and memory model (easily a factor of two), and leave out the rest of the machine "
                  "(power supply, fans, disks, network) and the data centre's overhead."]
    return "\n".join(lines)


def measure_idle(seconds: float, country_iso_code: str, *, output_dir: str | os.PathLike | None = None,
                 measure_power_secs: float = 1.0, tracking_mode: str = "machine") -> dict:
    """Track ``seconds`` in which this process does nothing (sleeps): the idle baseline, as a record."""
    tracker = offline_tracker(country_iso_code, project_name="idle", output_dir=output_dir,
                              measure_power_secs=measure_power_secs, tracking_mode=tracking_mode)
    tracker.start()
    try:
        time.sleep(float(seconds))
    finally:
        tracker.stop()
    return tracker_record(tracker, name="idle")


def run_name(batch_size: int, mixed_precision: str, num_processes: int) -> str:
    """The name of a configuration, e.g. ``"bs64-no-1p"``."""
    return f"bs{int(batch_size)}-{mixed_precision}-{int(num_processes)}p"


def configurations(batch_sizes: Sequence[int], mixed_precisions: Sequence[str],
                   process_counts: Sequence[int]) -> list[dict]:
    """Every combination, as dicts ``{name, batch_size, mixed_precision, num_processes}``.

    Ordered by number of processes, then mixed precision, then batch size (the order given).
    """
    return [{"name": run_name(b, m, p), "batch_size": int(b), "mixed_precision": str(m), "num_processes": int(p)}
            for p in process_counts for m in mixed_precisions for b in batch_sizes]


def measure_training(data, config: Mapping[str, Any], *, country_iso_code: str, epochs: int,
                     hidden_units: int | Sequence[int] = 64, lr: float = 3e-3, seed: int = 0,
                     output_dir: str | os.PathLike | None = None, measure_power_secs: float = 1.0,
                     tracking_mode: str = "machine", progress: bool = False) -> dict:
    """Train one configuration under an offline tracker; return its record (a plain dict).

    ``data`` is a :class:`rai.data.TabularSplit`; ``config`` one of :func:`configurations`.
    The tracker runs in this process in the given tracking mode, around the whole training --
    starting the worker processes included, since that is energy the run costs.  The record
    holds :data:`RECORD_FIELDS` plus the configuration, ``accuracy`` (on the test set),
    ``n_train``, ``epochs`` and ``n_examples`` (training examples processed: ``n_train x
    epochs``).
    """
    from rai.training import train_classifier

    tracker = offline_tracker(country_iso_code, project_name=str(config["name"]), output_dir=output_dir,
                              measure_power_secs=measure_power_secs, tracking_mode=tracking_mode)
    tracker.start()
    try:
        model = train_classifier(data.X_train, data.y_train, hidden_units=hidden_units, epochs=int(epochs),
                                 batch_size=int(config["batch_size"]), lr=float(lr),
                                 num_processes=int(config["num_processes"]),
                                 mixed_precision=str(config["mixed_precision"]), seed=int(seed), progress=progress)
    finally:
        tracker.stop()
    accuracy = float(np.mean(model.predict(data.X_test) == np.asarray(data.y_test)))
    n_train = int(len(data.X_train))
    return tracker_record(tracker, name=str(config["name"]), batch_size=int(config["batch_size"]),
                          mixed_precision=str(config["mixed_precision"]),
                          num_processes=int(config["num_processes"]), accuracy=accuracy, n_train=n_train,
                          epochs=int(epochs), n_examples=n_train * int(epochs))


# -- figures -----------------------------------------------------------------------------------

_COLORS = {"no": "#3a7ca5", "bf16": "#c05780", "fp16": "#e3a33b"}


def plot_pareto(table: pd.DataFrame, front: Sequence[int], *, energy: str = "energy_j",
                accuracy: str = "accuracy", chosen: str | None = None, title: str | None = None):
    """Accuracy against energy, one point per configuration (index = names), the front joined.

    Colour: mixed precision; marker: number of processes (read from the names made by
    :func:`run_name`).  ``front``: positions (not names) of the points on the Pareto front.
    """
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.4))
    x = table[energy].to_numpy(dtype=float)
    y = table[accuracy].to_numpy(dtype=float)
    names = [str(n) for n in table.index]
    for i, name in enumerate(names):
        parts = name.split("-")
        precision = parts[1] if len(parts) == 3 else "no"
        marker = "s" if parts[-1] != "1p" else "o"
        ax.scatter(x[i], y[i], s=45, color=_COLORS.get(precision, "0.5"), marker=marker, zorder=3,
                   edgecolor="black" if i in set(front) else "none")
        ax.annotate(name, (x[i], y[i]), textcoords="offset points", xytext=(6, -3), fontsize=7)
    order = sorted(front, key=lambda i: (x[i], -y[i]))
    if order:
        # the front as a staircase: what the best accuracy is for each energy budget
        xs, ys = [x[order[0]]], [y[order[0]]]
        for i in order[1:]:
            xs += [x[i], x[i]]
            ys += [ys[-1], y[i]]
        xs.append(max(x.max(), xs[-1]) * 1.05)
        ys.append(ys[-1])
        ax.plot(xs, ys, "-", color="0.25", lw=1.2, zorder=2, label="Pareto front")
    if chosen is not None and chosen in names:
        i = names.index(chosen)
        ax.scatter(x[i], y[i], s=220, facecolor="none", edgecolor="#2a9d8f", lw=2, zorder=4, label="chosen")
    for precision, color in _COLORS.items():
        if any(f"-{precision}-" in n for n in names):
            ax.scatter([], [], color=color, label=f"mixed precision: {precision}")
    ax.scatter([], [], color="0.5", marker="o", label="1 process")
    ax.scatter([], [], color="0.5", marker="s", label="several processes")
    ax.set_xlabel("energy of the training run, J (CodeCarbon)")
    ax.set_ylabel("test accuracy")
    ax.margins(x=0.12, y=0.15)
    ax.set_title(title or "Accuracy against energy: the Pareto front")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_energy_by_configuration(table: pd.DataFrame, idle_power_w: float, *, title: str | None = None):
    """Horizontal bars of ``energy_j`` per configuration, split into the idle baseline
    (``idle_power_w`` x duration) and what the run added (``dynamic_energy_j``)."""
    import matplotlib.pyplot as plt

    order = table.sort_values("energy_j").index
    t = table.loc[order]
    baseline = np.minimum(idle_power_w * t["duration_s"].to_numpy(dtype=float), t["energy_j"].to_numpy(dtype=float))
    extra = t["energy_j"].to_numpy(dtype=float) - baseline
    fig, ax = plt.subplots(figsize=(7.5, 0.35 * len(t) + 1.4))
    labels = [str(n) for n in t.index]
    ax.barh(labels, baseline, color="0.75", label=f"idle baseline ({idle_power_w:.1f} W x duration)")
    ax.barh(labels, extra, left=baseline, color="#3a7ca5", label="added by the run")
    for i, (e, d) in enumerate(zip(t["energy_j"], t["duration_s"])):
        ax.text(e, i, f" {e:.0f} J, {d:.1f} s", va="center", fontsize=7)
    ax.set_xlabel("energy, J (CodeCarbon)")
    ax.margins(x=0.2)
    ax.set_title(title or "Energy by configuration")
    ax.legend(frameon=False, fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def plot_location(emissions_g: pd.Series, energy_kwh: float, *, highlight: str | None = None):
    """Bars of the emissions (g CO2e) of the same energy in several countries (index = codes)."""
    import matplotlib.pyplot as plt

    s = emissions_g.sort_values()
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(s) + 1.3))
    colors = ["#c05780" if str(c) == highlight else "#3a7ca5" for c in s.index]
    ax.barh([str(c) for c in s.index], s.to_numpy(dtype=float), color=colors)
    for i, v in enumerate(s.to_numpy(dtype=float)):
        ax.text(v, i, f" {v:.3g} g", va="center", fontsize=7)
    ax.set_xlabel(f"g CO$_2$e for the same {energy_kwh * 1000:.3g} Wh (CodeCarbon's yearly intensities)")
    ax.margins(x=0.15)
    ax.set_title("Same runs, same energy, different grids")
    fig.tight_layout()
    return fig


# -- reporting ---------------------------------------------------------------------------------

def hardware_description(run: Mapping[str, Any]) -> str:
    """The hardware line of a report, from a record: CPU model and threads, GPUs, memory."""
    gpus = f"{run['gpu_count']} x {run['gpu_model']}" if int(run.get("gpu_count") or 0) else "no GPU"
    return (f"{run.get('cpu_model') or 'unknown CPU'} ({int(run.get('cpu_count') or 0)} threads), {gpus}, "
            f"{float(run.get('ram_total_size') or 0):.0f} GB RAM")


def render_report(record: Mapping[str, Any], title: str = "Environmental impact of training") -> str:
    """A reporting record (a dict) as a two-column Markdown table, numbers with sensible digits."""
    def fmt(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:.4g}"
        return str(value).replace("|", "\\|")

    lines = [f"**{title}**", "", "| item | value |", "|---|---|"]
    lines += [f"| {key.replace('_', ' ')} | {fmt(value)} |" for key, value in record.items()]
    return "\n".join(lines)

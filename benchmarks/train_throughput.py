"""Training throughput of the same spiking networks in snnkit, snnTorch, Norse and SpikingJelly, side by side.

Measures full training steps (forward, cross-entropy, backward, Adam step) in samples per second on the real
digits data (``snnkit.data.load("digits")``, 1,437 training images, 8x8), for two networks built the same way
in every framework:

- MLP: flatten, Linear 64-512, LIF, Linear 512-10, LIF;
- ConvNet: conv3x3 32 + BN + LIF + avgpool2, conv3x3 64 + BN + LIF + avgpool2, fc 256 + BN + LIF, fc 10 + LIF
  (BatchNorm statistics over batch and time; conv layers without bias, as snnkit builds them with BN).

Common settings: T = 8 steps of direct (analog) input, LIF with beta = 0.9, threshold 1, reset to zero, atan
surrogate (alpha = 2) where the framework has it, logits = 10 x mean output spike count, Adam (lr 2e-3),
batch 64 (the 22 full batches of an epoch; the last partial batch is dropped for every framework). Every
framework runs its multi-step (layer-at-a-time) form; snnTorch's ``Leaky`` and Norse's cells are stepped over
time per layer, stateless layers see time merged into the batch.

Protocol: all configurations are built in one process; warm-up epochs (longer for ``torch.compile``) are not
timed; then each round runs one epoch of every configuration, in a rotated order, on the same shuffled order
of the data. The machine is shared: for every epoch the CPU time other processes used meanwhile is read from
``/proc/stat``, and an epoch during which they used more than ``--max-foreign`` of the CPUs is disturbed, left
out and re-run in a later round; the reported throughput is the median over a configuration's undisturbed
epochs (all of them, flagged, if fewer than 3 were). The 1-minute load is recorded per round. The machine's matmul rate is measured with ``torch.mm`` on the models' own GEMM shapes,
and the achieved fraction counts a training step as 3 x the forward matmul/conv FLOPs of the step-by-step
network (the same nominal work for every framework).

Usage::

    python benchmarks/train_throughput.py                 # full run: JSON, table, README section
    python benchmarks/train_throughput.py --quick --out /tmp/tt.json   # smoke run (seconds, no compile)

Writes ``benchmarks/results/train_throughput.json`` (atomically) and the markdown table between the
``<!-- train-throughput:begin -->`` / ``end`` markers of README.md (else
``benchmarks/results/train_throughput.md``).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MARK_BEGIN, MARK_END = "<!-- train-throughput:begin -->", "<!-- train-throughput:end -->"

T = 8
BETA = 0.9
THRESHOLD = 1.0
ATAN_ALPHA = 2.0
LOGIT_SCALE = 10.0
LR = 2e-3
N_CLASSES = 10
MODELS = ("mlp", "convnet")


# --------------------------------------------------------------------------------------------------------------
# Networks. Each builder returns a module mapping images [B, 1, 8, 8] to logits [B, 10].


class _MergeTime(nn.Module):
    """Apply a stateless module to ``[T, B, ...]`` with time merged into the batch (BatchNorm over B*T)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.module(x.reshape(x.shape[0] * x.shape[1], *x.shape[2:]))
        return y.reshape(x.shape[0], x.shape[1], *y.shape[1:])


class _TimeMajorNet(nn.Module):
    """Direct encoding (the image repeated over T, time first), a layer stack, logits from the spike counts."""

    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.layers(x.unsqueeze(0).expand(T, *x.shape))
        return out.mean(0) * LOGIT_SCALE


def _stateless(arch: str, neuron: Callable[[], nn.Module], wrap: Callable[[nn.Module], nn.Module]) -> list:
    """The layer list of ``arch`` with ``neuron()`` after every weighted layer; ``wrap`` adapts stateless ones."""
    if arch == "mlp":
        return [wrap(nn.Flatten()), wrap(nn.Linear(64, 512)), neuron(), wrap(nn.Linear(512, 10)), neuron()]
    return [
        wrap(nn.Conv2d(1, 32, 3, padding=1, bias=False)), wrap(nn.BatchNorm2d(32)), neuron(), wrap(nn.AvgPool2d(2)),
        wrap(nn.Conv2d(32, 64, 3, padding=1, bias=False)), wrap(nn.BatchNorm2d(64)), neuron(), wrap(nn.AvgPool2d(2)),
        wrap(nn.Flatten()), wrap(nn.Linear(64 * 2 * 2, 256)), wrap(nn.BatchNorm1d(256)), neuron(),
        wrap(nn.Linear(256, 10)), neuron(),
    ]


def build_snnkit(arch: str) -> nn.Module:
    from snnkit.models import build

    return build({"arch": arch, "input_shape": [1, 8, 8], "num_classes": N_CLASSES, "timesteps": T,
                  "beta": BETA, "threshold": THRESHOLD, "reset": "zero", "surrogate": f"atan:alpha={ATAN_ALPHA:g}",
                  "logit_scale": LOGIT_SCALE})


class _SnnTorchLeaky(nn.Module):
    """snnTorch ``Leaky`` stepped over the time axis of ``[T, B, ...]``."""

    def __init__(self):
        super().__init__()
        import snntorch
        from snntorch import surrogate

        self.lif = snntorch.Leaky(beta=BETA, threshold=THRESHOLD, spike_grad=surrogate.atan(alpha=ATAN_ALPHA),
                                  reset_mechanism="zero")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mem = torch.zeros_like(x[0])
        spikes = []
        for t in range(x.shape[0]):
            spk, mem = self.lif(x[t], mem)
            spikes.append(spk)
        return torch.stack(spikes)


def build_snntorch(arch: str) -> nn.Module:
    return _TimeMajorNet(_stateless(arch, _SnnTorchLeaky, _MergeTime))


class _NorseLayer(nn.Module):
    """A Norse multi-step neuron module (``[T, B, ...]`` in, spikes out; the state is dropped)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x)[0]


def _norse_lifbox() -> nn.Module:
    """Norse's current-free LIF (``lif_box_feed_forward_step``) in Norse's own time loop (``SNN``)."""
    from norse.torch.functional.lif_box import LIFBoxFeedForwardState, LIFBoxParameters, lif_box_feed_forward_step
    from norse.torch.module.snn import SNN

    p = LIFBoxParameters(tau_mem_inv=torch.as_tensor((1 - BETA) / 1e-3), v_th=torch.as_tensor(THRESHOLD),
                         v_reset=torch.as_tensor(0.0), method="super", alpha=torch.as_tensor(100.0))
    return _NorseLayer(SNN(lif_box_feed_forward_step, lambda x: LIFBoxFeedForwardState(v=torch.zeros_like(x[0])),
                           p, dt=1e-3))


def _norse_lif() -> nn.Module:
    """Norse's ``LIF`` (current-based; tau_syn = dt, so the current is the previous step's input)."""
    import norse.torch as norse

    p = norse.LIFParameters(tau_syn_inv=torch.as_tensor(1 / 1e-3), tau_mem_inv=torch.as_tensor((1 - BETA) / 1e-3),
                            v_th=torch.as_tensor(THRESHOLD), v_reset=torch.as_tensor(0.0), method="super",
                            alpha=torch.as_tensor(100.0))
    return _NorseLayer(norse.LIF(p, dt=1e-3))


def build_norse_lifbox(arch: str) -> nn.Module:
    return _TimeMajorNet(_stateless(arch, _norse_lifbox, _MergeTime))


def build_norse_lif(arch: str) -> nn.Module:
    return _TimeMajorNet(_stateless(arch, _norse_lif, _MergeTime))


def build_spikingjelly(arch: str) -> nn.Module:
    """SpikingJelly 2.0 multi-step: ``layer.*`` with ``step_mode='m'`` and ``neuron.LIFNode`` (tau = 1/(1-beta))."""
    from spikingjelly.activation_based import layer, neuron, surrogate

    def lif():
        return neuron.LIFNode(tau=1 / (1 - BETA), decay_input=False, v_threshold=THRESHOLD, v_reset=0.0,
                              surrogate_function=surrogate.ATan(alpha=ATAN_ALPHA), detach_reset=True,
                              step_mode="m")

    if arch == "mlp":
        layers = [layer.Flatten(step_mode="m"), layer.Linear(64, 512, step_mode="m"), lif(),
                  layer.Linear(512, 10, step_mode="m"), lif()]
    else:
        layers = [
            layer.Conv2d(1, 32, 3, padding=1, bias=False, step_mode="m"), layer.BatchNorm2d(32, step_mode="m"), lif(),
            layer.AvgPool2d(2, step_mode="m"),
            layer.Conv2d(32, 64, 3, padding=1, bias=False, step_mode="m"), layer.BatchNorm2d(64, step_mode="m"),
            lif(), layer.AvgPool2d(2, step_mode="m"),
            layer.Flatten(step_mode="m"), layer.Linear(256, 256, step_mode="m"), layer.BatchNorm1d(256, step_mode="m"),
            lif(), layer.Linear(256, 10, step_mode="m"), lif(),
        ]
    return _TimeMajorNet(layers)


def _reset_spikingjelly(model: nn.Module) -> None:
    from spikingjelly.activation_based import functional

    functional.reset_net(model)


@dataclass
class Framework:
    key: str            # row label
    package: str        # distribution name (version, and whether it is installed)
    build: Callable[[str], nn.Module]
    after_step: Callable[[nn.Module], None] | None = None
    note: str = ""
    # "compile" = torch.compile(model); "<setting>@1t" = the same with 1 torch thread whatever the pass uses
    # (for "at its best setting": small networks can run faster on one thread); see make_config for the others
    settings: tuple[str, ...] = ("eager",)


FRAMEWORKS = [
    Framework("snnkit", "snnkit", build_snnkit,
              settings=("eager", "eager-torch-scan", "compile", "eager@1t", "compile@1t"),
              note="layer-at-a-time, fused LIF scan with its own backward (compiled C kernels; "
                   "'eager-torch-scan' is the pure-torch fallback used without a C compiler)"),
    Framework("snntorch", "snntorch", build_snntorch, note="Leaky stepped per layer, atan surrogate"),
    Framework("norse-lifbox", "norse", build_norse_lifbox,
              note="LIFBox (current-free LIF = the same neuron) in Norse's SNN loop; SuperSpike surrogate "
                   "(Norse has no atan)"),
    Framework("norse-lif", "norse", build_norse_lif,
              note="Norse LIF (current-based, tau_syn = dt); SuperSpike surrogate"),
    Framework("spikingjelly", "spikingjelly", build_spikingjelly, after_step=_reset_spikingjelly,
              settings=("eager", "compile", "compile@1t"),
              note="LIFNode step_mode='m' (its CPU multi-step op), atan surrogate, reset_net after each step"),
]


# --------------------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Config:
    framework: Framework
    setting: str                      # "eager", "compile", ... (Framework.settings)
    arch: str
    model: nn.Module = None
    step_fn: Callable = None
    opt: torch.optim.Optimizer = None
    epoch_s: list = field(default_factory=list)       # wall-clock seconds per timed epoch
    epoch_cpu_s: list = field(default_factory=list)   # process CPU seconds per timed epoch
    epoch_foreign: list = field(default_factory=list) # other processes' share of the CPUs per timed epoch
    warmup_s: list = field(default_factory=list)
    error: str | None = None
    threads: int = 0                  # torch threads its steps run with

    @property
    def label(self) -> str:
        return f"{self.framework.key}/{self.setting}/{self.arch}"


def _split(setting: str) -> tuple[str, "int | None"]:
    """``"compile@1t"`` -> ``("compile", 1)``; ``"eager"`` -> ``("eager", None)`` (the pass's threads)."""
    base, _, threads = setting.partition("@")
    return base, int(threads.rstrip("t")) if threads else None


def make_config(fw: Framework, setting: str, arch: str, seed: int, threads: int) -> Config:
    """One framework/setting/model; its steps run with ``threads`` torch threads unless the setting names its own."""
    torch.manual_seed(seed)
    model = fw.build(arch)
    model.train()
    base, own_threads = _split(setting)
    threads = own_threads or threads
    # Static shapes (the batch never changes): one specialised graph per layer shape, no symbolic sizes.
    fwd = torch.compile(model, dynamic=False) if base == "compile" else model
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    after = fw.after_step
    use_native = base != "eager-torch-scan"  # snnkit only: the compiled scan kernels on or off for this step

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:
        if torch.get_num_threads() != threads:
            torch.set_num_threads(threads)
        if fw.key == "snnkit":
            from snnkit.nn import native

            native.set_enabled(use_native)
        loss = F.cross_entropy(fwd(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if after is not None:
            after(model)

    return Config(fw, setting, arch, model, step, opt, threads=threads)


def _machine_busy_s() -> "float | None":
    """CPU seconds used so far by everything on the machine (``/proc/stat``; stolen time counts), or None."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    steal = ticks[7] if len(ticks) > 7 else 0
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def run_epoch(cfg: Config, x: torch.Tensor, y: torch.Tensor, order: torch.Tensor,
              batch: int) -> tuple[float, float, "float | None"]:
    """One epoch of full batches in ``order``.

    Returns its wall time and this process's CPU time (seconds), and the share of the machine's CPU capacity
    that other processes used meanwhile (None where ``/proc/stat`` is unavailable): the disturbance.
    """
    n_batches = len(order) // batch
    b0, c0, t0 = _machine_busy_s(), time.process_time(), time.perf_counter()
    for b in range(n_batches):
        idx = order[b * batch:(b + 1) * batch]
        cfg.step_fn(x[idx], y[idx])
    wall, cpu, b1 = time.perf_counter() - t0, time.process_time() - c0, _machine_busy_s()
    foreign = None if b0 is None or b1 is None else max(0.0, b1 - b0 - cpu) / (wall * (os.cpu_count() or 1))
    return wall, cpu, foreign


def forward_flops_per_sample(model: nn.Module, x: torch.Tensor) -> float:
    """Multiply-accumulate FLOPs (2 per MAC) of every Linear and Conv2d in one forward, per sample."""
    total = [0]

    def hook(module, inputs, output):
        if isinstance(module, nn.Linear):
            total[0] += 2 * output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            k = module.kernel_size[0] * module.kernel_size[1]
            total[0] += 2 * output.numel() * (module.in_channels // module.groups) * k

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()
    return total[0] / len(x)


def nominal_forward_flops(arch: str, x: torch.Tensor) -> float:
    """:func:`forward_flops_per_sample` of the step-by-step network ``arch`` (neurons as identities)."""
    return forward_flops_per_sample(_TimeMajorNet(_stateless(arch, nn.Identity, _MergeTime)), x)


def matmul_rate(shapes: list[tuple[int, int, int]], min_time: float = 0.2) -> list[dict]:
    """``torch.mm`` GFLOP/s for each ``(m, k, n)``: the best of 5 timed runs of at least ``min_time`` s."""
    out = []
    for m, k, n in shapes:
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            torch.mm(a, b)
        reps = 1
        while True:
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            if time.perf_counter() - t0 > min_time / 5:
                break
            reps *= 2
        best = math.inf
        for _ in range(5):
            t0 = time.perf_counter()
            for _ in range(reps):
                torch.mm(a, b)
            best = min(best, (time.perf_counter() - t0) / reps)
        out.append({"m": m, "k": k, "n": n, "gflops": 2 * m * k * n / best / 1e9})
    return out


def compile_fixed_cost(threads: int, rounds: int = 15, steps: int = 100, backend: str = "inductor") -> dict:
    """What ``torch.compile(model, dynamic=False)`` adds to a training step by itself: forward and backward of a
    model with nothing to fuse (one ``Linear(8, 10)`` on 4 samples, cross-entropy), eager and compiled (with
    ``backend``, torch.compile's default unless a caller asks otherwise), timed in alternating blocks of ``steps``
    steps; medians over ``rounds`` blocks, in microseconds per step.

    The difference is the per-call cost of Dynamo's guards and of the AOT autograd and Inductor runtime around
    the forward and backward graphs: a compiled model wins only where fusing its operations saves more."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = nn.Linear(8, 10)
    x, y = torch.randn(4, 8), torch.randint(0, 10, (4,))
    calls = {"eager": model, "compile": torch.compile(model, backend=backend, dynamic=False)}

    def block(fwd: Callable) -> float:
        t0 = time.perf_counter()
        for _ in range(steps):
            F.cross_entropy(fwd(x), y).backward()
        return (time.perf_counter() - t0) / steps * 1e6

    for fwd in calls.values():
        block(fwd)  # warm-up (the compiled one compiles here)
    times = {k: [] for k in calls}
    for r in range(rounds):
        for k in (list(calls) if r % 2 == 0 else list(calls)[::-1]):
            times[k].append(block(calls[k]))
    eager, compiled = (statistics.median(times[k]) for k in calls)
    return {"model": "Linear(8, 10), batch 4, cross-entropy: forward + backward", "threads": threads,
            "eager_us": eager, "compile_us": compiled, "added_us": compiled - eager}


def gemm_shapes(batch: int) -> list[tuple[int, int, int]]:
    """The forward GEMMs of the two networks (convs as im2col GEMMs) and one large square product."""
    bt = batch * T
    return [(bt, 64, 512), (bt, 512, 10),                        # MLP
            (bt * 64, 9, 32), (bt * 16, 288, 64), (bt, 256, 256),  # ConvNet conv1, conv2, fc
            (1024, 1024, 1024)]


def versions() -> dict:
    out = {"python": platform.python_version(), "torch": torch.__version__}
    for pkg in ("snnkit", "snntorch", "norse", "spikingjelly"):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            out[pkg] = None
    return out


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


# --------------------------------------------------------------------------------------------------------------
# Report


def summarise(configs: list[Config], n_samples: int, flops: dict, peak: float, threads: int, max_foreign: float,
              min_clean: int) -> list[dict]:
    """One row per configuration: medians over its undisturbed epochs (all epochs, flagged ``disturbed``, when
    fewer than ``min_clean`` were undisturbed)."""
    rows = []
    for cfg in configs:
        row = {"framework": cfg.framework.key, "setting": cfg.setting, "model": cfg.arch, "threads": cfg.threads or threads,
               "note": cfg.framework.note}
        if cfg.error or not cfg.epoch_s:
            row["error"] = cfg.error or "not measured"
            rows.append(row)
            continue
        clean = [i for i, f in enumerate(cfg.epoch_foreign) if _clean(f, max_foreign)]
        used = clean if len(clean) >= min_clean else list(range(len(cfg.epoch_s)))
        rates = [n_samples / cfg.epoch_s[i] for i in used]
        cpu_rates = [n_samples / cfg.epoch_cpu_s[i] for i in used]
        med = statistics.median(rates)
        fwd_flops = flops[cfg.arch]
        train_flops = 3 * fwd_flops
        row.update({
            "samples_per_s": med,
            "samples_per_cpu_s": statistics.median(cpu_rates),
            "epochs_used": len(used),
            "disturbed": len(clean) < min_clean,
            "epoch_s": cfg.epoch_s,
            "epoch_cpu_s": cfg.epoch_cpu_s,
            "epoch_foreign_cpu_share": cfg.epoch_foreign,
            "epoch_used": [i in used for i in range(len(cfg.epoch_s))],
            "warmup_s": [w for w, _, _ in cfg.warmup_s],
            "forward_gflop_per_sample": fwd_flops / 1e9,
            "train_gflop_per_sample": train_flops / 1e9,
            "achieved_gflops": med * train_flops / 1e9,
            "fraction_of_matmul_peak": med * train_flops / 1e9 / peak,
        })
        rows.append(row)
    for row in rows:
        base = next((r for r in rows if r["framework"] == "snnkit" and r["setting"] == "eager"
                     and r["model"] == row["model"] and "samples_per_s" in r), None)
        if base and "samples_per_s" in row:
            row["ratio_to_snnkit_eager"] = row["samples_per_s"] / base["samples_per_s"]
            row["cpu_ratio_to_snnkit_eager"] = row["samples_per_cpu_s"] / base["samples_per_cpu_s"]
    return rows


def targets(rows: list[dict], key: str = "samples_per_s") -> dict:
    """The goals per model: snnkit eager >= 2x snnTorch and >= 2x SpikingJelly eager; snnkit at its best setting
    >= 1.3x SpikingJelly's best torch.compile setting; snnkit's compile setting at least as fast as its eager one
    (same thread count). ``key`` picks the throughput (wall or CPU time)."""
    out = {}
    for arch in MODELS:
        def rate(fw, setting):
            r = next((r for r in rows if r["framework"] == fw and r["setting"] == setting and r["model"] == arch
                      and key in r), None)
            return r[key] if r else None

        def best_of(fw, prefix=""):
            vals = [r[key] for r in rows if r["framework"] == fw and r["model"] == arch and key in r
                    and r["setting"].startswith(prefix)]
            return max(vals, default=None)

        ours = rate("snnkit", "eager")
        best = best_of("snnkit")  # any setting, thread counts included
        checks = {}
        for name, other, factor, mine in (("eager_ge_2x_snntorch", rate("snntorch", "eager"), 2.0, ours),
                                          ("eager_ge_2x_spikingjelly_eager", rate("spikingjelly", "eager"), 2.0, ours),
                                          ("best_ge_1.3x_spikingjelly_compile", best_of("spikingjelly", "compile"),
                                           1.3, best),
                                          ("compile_ge_eager", ours, 1.0, rate("snnkit", "compile"))):
            if other is not None and mine is not None:
                checks[name] = {"met": mine >= factor * other, "ratio": mine / other}
        if checks:
            out[arch] = checks
    return out


def table(rows: list[dict], cpu: bool = False) -> str:
    """Markdown table of one pass; ``cpu`` reports samples per CPU-second instead of wall-clock throughput."""
    key, ratio = ("samples_per_cpu_s", "cpu_ratio_to_snnkit_eager") if cpu else ("samples_per_s",
                                                                                  "ratio_to_snnkit_eager")
    unit = "samples per CPU-s (median)" if cpu else "samples/s (median)"
    head = (f"| framework | setting | threads | model | {unit} | x snnkit eager | GFLOP/s achieved "
            "| % of matmul peak | epochs |\n|---|---|---:|---|---:|---:|---:|---:|---:|\n")
    lines = []
    for r in rows:
        if key not in r:
            lines.append(f"| {r['framework']} | {r['setting']} | {r['threads']} | {r['model']} | failed: "
                         f"{r.get('error', '')} | | | | |")
            continue
        gflops = r[key] * r["train_gflop_per_sample"]
        frac = gflops / (r["achieved_gflops"] / r["fraction_of_matmul_peak"])
        epochs = f"{r['epochs_used']}{' (disturbed)' if r['disturbed'] else ''}"
        lines.append(f"| {r['framework']} | {_split(r['setting'])[0]} | {r['threads']} | {r['model']} | {r[key]:,.0f} | "
                     f"{r.get(ratio, float('nan')):.2f} | {gflops:.1f} | {100 * frac:.1f} | {epochs} |")
    return head + "\n".join(lines) + "\n"


def _target_lines(t: dict) -> list[str]:
    out = []
    for arch, checks in t.items():
        parts = [f"{name.replace('_', ' ')}: {'met' if v['met'] else 'NOT met'} ({v['ratio']:.2f}x)"
                 for name, v in checks.items()]
        out.append(f"- {arch}: " + "; ".join(parts))
    return out


def _compile_cost_lines(run: dict, batch: int) -> list[str]:
    """The pass's :func:`compile_fixed_cost`, set against snnkit's eager training step per model."""
    cost = run.get("compile_fixed_cost")
    if not cost:
        return []
    steps = []
    for r in run["results"]:
        if r["framework"] == "snnkit" and r["setting"] == "eager" and "samples_per_s" in r:
            step_us = 1e6 * batch / r["samples_per_s"]
            share = 100 * cost["added_us"] / step_us
            steps.append(f"{r['model']} {step_us:,.0f} us (the added cost is {share:.1f} %)")
    return [f"torch.compile's own cost per training step, measured in this pass on a model with nothing to fuse "
            f"({cost['model']}, {cost['threads']} thread(s)): eager {cost['eager_us']:,.0f} us, compiled "
            f"{cost['compile_us']:,.0f} us, **{cost['added_us']:+,.0f} us**. snnkit's eager steps: "
            f"{', '.join(steps)}: what compiling a model costs before its fusions pay anything back.", ""]


def markdown(report: dict) -> str:
    c = report["config"]
    lines = []
    for i, run in enumerate(report["runs"]):
        m = run["machine"]
        loads = m["load_per_round"]
        cpu = run["clock"] == "cpu"
        lines += [
            f"**{'Load-robust check: 1 thread, throughput per CPU-second' if cpu else 'Wall clock'}** - "
            f"{m['torch_threads']} torch thread(s) unless the *threads* column says otherwise, on {m['cpu']}, torch {report['versions']['torch']}; 1-min load "
            f"during the rounds {min(loads):.2f}-{max(loads):.2f} (other jobs share this machine). Batch "
            f"{c['batch']}, T = {c['timesteps']}, {c['samples_per_epoch']} samples per epoch; median over the "
            f"interleaved epochs after warm-up during which other processes used at most "
            f"{100 * c['max_foreign_cpu_share']:.0f}% of the CPUs (column *epochs*).",
            "",
            table(run["results"], cpu=cpu).rstrip(),
            "",
            f"`torch.mm` peak over the models' GEMM shapes: {m['matmul_peak_gflops']:.1f} GFLOP/s "
            f"({m['torch_threads']} thread(s)); training FLOPs counted as 3 x forward matmul/conv FLOPs.",
            "",
            *(_target_lines(run["targets"])),
            "",
            *_compile_cost_lines(run, c["batch"]),
        ]
    lines.append("Rows: " + "; ".join(f"{fw['key']}: {fw['note']}" for fw in report["frameworks"]) + ".")
    return "\n".join(lines) + "\n"


def write_readme(text: str, readme: Path, fallback: Path) -> Path:
    if readme.is_file():
        content = readme.read_text()
        if MARK_BEGIN in content and MARK_END in content:
            head, rest = content.split(MARK_BEGIN, 1)
            _, tail = rest.split(MARK_END, 1)
            atomic_write_text(readme, f"{head}{MARK_BEGIN}\n{text}{MARK_END}{tail}")
            return readme
    atomic_write_text(fallback, text)
    return fallback


class QuietGate:
    """Waits, before each round, until other processes use at most ``share`` of the CPUs (sampled over 3 s),
    spending at most ``budget_s`` seconds in total; disabled (no waiting) when ``budget_s`` is 0."""

    def __init__(self, share: float, budget_s: float):
        self.share, self.budget_s, self.waited_s, self.timeouts = share, budget_s, 0.0, 0

    def wait(self) -> None:
        while self.budget_s - self.waited_s > 0:
            b0, c0, t0 = _machine_busy_s(), time.process_time(), time.monotonic()
            time.sleep(3)
            b1, c1, t1 = _machine_busy_s(), time.process_time(), time.monotonic()
            self.waited_s += t1 - t0
            if b0 is None or b1 is None:
                return
            if max(0.0, b1 - b0 - (c1 - c0)) / ((t1 - t0) * (os.cpu_count() or 1)) <= self.share:
                return
        self.timeouts += 1

    def record(self) -> dict:
        return {"share": self.share, "budget_s": self.budget_s, "waited_s": round(self.waited_s, 1),
                "rounds_started_busy": self.timeouts}


def _clean(foreign: "float | None", limit: float) -> bool:
    return foreign is None or foreign <= limit


def measure(configs: list[Config], x, y, n_used: int, batch: int, rounds: int, warmups: Callable[[Config], int],
            gen: torch.Generator, max_foreign: float, max_rounds: int, gate: QuietGate) -> list[float]:
    """Warm every configuration up, then time interleaved epochs until each configuration has ``rounds``
    undisturbed ones (other processes using at most ``max_foreign`` of the CPUs), or ``max_rounds`` rounds
    passed; returns the 1-minute load after each round."""
    for cfg in configs:  # warm-up (compile happens here)
        if cfg.error:
            continue
        try:
            for _ in range(warmups(cfg)):
                order = torch.randperm(len(x), generator=gen)[:n_used]
                cfg.warmup_s.append(run_epoch(cfg, x, y, order, batch))
        except Exception as exc:  # a framework failing here is reported in its row
            cfg.error = f"{type(exc).__name__}: {exc}"
        done = ", ".join(f"{w:.1f}s" for w, _, _ in cfg.warmup_s)
        print(f"  warm-up {cfg.label}: {done or cfg.error}", flush=True)
    load_per_round = []
    live = [c for c in configs if not c.error]
    for r in range(max_rounds):
        todo = [c for c in live if sum(_clean(f, max_foreign) for f in c.epoch_foreign) < rounds]
        if not todo:
            break
        gate.wait()
        order = torch.randperm(len(x), generator=gen)[:n_used]
        k = r % len(todo)
        worst = 0.0
        for cfg in todo[k:] + todo[:k]:  # rotate the order so no configuration always runs first
            wall, cpu, foreign = run_epoch(cfg, x, y, order, batch)
            cfg.epoch_s.append(wall)
            cfg.epoch_cpu_s.append(cpu)
            cfg.epoch_foreign.append(foreign)
            worst = max(worst, foreign or 0.0)
        load_per_round.append(os.getloadavg()[0])
        print(f"  round {r + 1}: {len(todo)} configuration(s), load {load_per_round[-1]:.2f}, "
              f"other processes up to {100 * worst:.0f}% of the CPUs", flush=True)
    return load_per_round


def machine(threads: int, load_per_round: list[float], quick: bool, batch: int) -> dict:
    torch.set_num_threads(threads)
    peak_rows = matmul_rate(gemm_shapes(batch), min_time=0.05 if quick else 0.3)
    return {"cpu": cpu_name(), "logical_cpus": os.cpu_count(), "torch_threads": threads,
            "platform": platform.platform(), "load_per_round": load_per_round, "load_at_end": os.getloadavg()[0],
            "matmul": peak_rows, "matmul_peak_gflops": max(r["gflops"] for r in peak_rows)}


# --------------------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="smoke run: 2 batches per epoch, 1 warm-up and 2 timed epochs, no torch.compile, "
                         "no single-thread pass, no README")
    ap.add_argument("--rounds", type=int, default=7,
                    help="undisturbed timed epochs wanted per configuration (default 7)")
    ap.add_argument("--max-foreign", type=float, default=0.15, metavar="SHARE",
                    help="an epoch during which other processes used more than this share of the CPUs is "
                         "disturbed: it is re-run and left out of the median (default 0.15)")
    ap.add_argument("--max-rounds", type=int, default=None,
                    help="give up re-running disturbed epochs after this many rounds (default 3 x --rounds)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed epochs per eager configuration (default 1)")
    ap.add_argument("--compile-warmup", type=int, default=2, help="untimed epochs per compiled configuration")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads of the main pass (default 2)")
    ap.add_argument("--single-thread-pass", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the eager settings with 1 thread by process CPU time (robust to other load)")
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--frameworks", default=",".join(f.key for f in FRAMEWORKS))
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile settings")
    ap.add_argument("--max-wait", type=float, default=0.0, metavar="S",
                    help="before each round, wait until other processes use at most --max-foreign of the CPUs, "
                         "spending at most S seconds in total (default 0: no waiting)")
    ap.add_argument("--out", type=Path, default=None, help="JSON path (default benchmarks/results/train_throughput.json)")
    ap.add_argument("--readme", type=Path, default=ROOT / "README.md")
    ap.add_argument("--no-readme", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    wanted = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    for name, items, allowed in (("model", models, MODELS), ("framework", wanted, [f.key for f in FRAMEWORKS])):
        for item in items:
            if item not in allowed:
                print(f"train_throughput: unknown {name} {item!r} (choose from {', '.join(allowed)})", file=sys.stderr)
                return 2
    if args.batch < 1 or args.rounds < 1 or args.threads < 1:
        print("train_throughput: --batch, --rounds and --threads must be >= 1", file=sys.stderr)
        return 2
    quick = args.quick
    rounds = 2 if quick else args.rounds
    out_path = args.out or RESULTS / ("train_throughput_quick.json" if quick else "train_throughput.json")
    torch.set_num_threads(args.threads)
    warnings.filterwarnings("ignore")

    from snnkit import data
    x, y = data.load("digits", "train")
    n_used = (len(x) // args.batch) * args.batch
    if quick:
        n_used = min(n_used, 2 * args.batch)

    frameworks, skipped = [], []
    for fw in FRAMEWORKS:
        if fw.key not in wanted:
            continue
        try:
            importlib.metadata.version(fw.package)
            __import__(fw.package)
        except Exception as exc:  # a missing or broken peer is reported, not fatal
            skipped.append({"framework": fw.key, "reason": f"{type(exc).__name__}: {exc}"})
            continue
        frameworks.append(fw)

    def build_configs(with_compile: bool, threads: int) -> list[Config]:
        configs = []
        for arch in models:
            for fw in frameworks:
                for setting in [st for st in fw.settings if with_compile or _split(st) == ("eager", None)
                                or st == "eager-torch-scan"]:
                    try:
                        configs.append(make_config(fw, setting, arch, args.seed, threads))
                    except Exception as exc:  # reported in its row
                        configs.append(Config(fw, setting, arch, error=f"{type(exc).__name__}: {exc}"))
        return configs

    configs = build_configs(not (quick or args.no_compile), args.threads)
    # The nominal work of one training step, the same for every framework: the step-by-step network's matmul
    # and conv FLOPs (a framework that skips work, as snnkit does for the direct code's repeated input, gets
    # credit only through its throughput).
    flops = {arch: nominal_forward_flops(arch, x[: args.batch]) for arch in models}

    gate = QuietGate(args.max_foreign, 0.0 if quick else args.max_wait)
    gen = torch.Generator().manual_seed(args.seed)
    passes = [(args.threads, "wall", configs)]
    if args.single_thread_pass and not quick:
        passes.append((1, "cpu", build_configs(False, 1)))
    runs = []
    for threads, clock, cfgs in passes:
        torch.set_num_threads(threads)
        print(f"train_throughput: {len(cfgs)} configurations, {threads} thread(s), {n_used} samples per epoch, "
              f"load {os.getloadavg()[0]:.2f}", flush=True)

        def warmups(cfg: Config) -> int:
            return 1 if quick else args.compile_warmup if cfg.setting == "compile" else args.warmup

        max_rounds = args.max_rounds or (rounds if quick else 3 * rounds)
        loads = measure(cfgs, x, y, n_used, args.batch, rounds, warmups, gen, args.max_foreign, max_rounds, gate)
        mach = machine(threads, loads, quick, args.batch)
        rows = summarise(cfgs, n_used, flops, mach["matmul_peak_gflops"], threads, args.max_foreign,
                         min(3, rounds))
        key = "samples_per_cpu_s" if clock == "cpu" else "samples_per_s"
        runs.append({"threads": threads, "clock": clock, "machine": mach, "results": rows,
                     "targets": targets(rows, key)})
        if any(c.setting == "compile" for c in cfgs):
            runs[-1]["compile_fixed_cost"] = compile_fixed_cost(threads)
        print()
        print(table(rows, cpu=clock == "cpu"))
        print("\n".join(_compile_cost_lines(runs[-1], args.batch)))
    torch.set_num_threads(args.threads)

    report = {
        "schema": 1,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "quick": quick,
        "quiet_gate": gate.record(),
        "config": {"timesteps": T, "batch": args.batch, "samples_per_epoch": n_used, "rounds": rounds,
                   "max_foreign_cpu_share": args.max_foreign,
                   "warmup_epochs": args.warmup, "compile_warmup_epochs": args.compile_warmup,
                   "beta": BETA, "threshold": THRESHOLD, "reset": "zero", "surrogate": f"atan(alpha={ATAN_ALPHA:g})",
                   "optimizer": f"Adam(lr={LR:g})", "loss": "cross_entropy(10 x mean output spikes)",
                   "data": "snnkit.data.load('digits', 'train')", "training_flops": "3 x forward"},
        "versions": versions(),
        "frameworks": [{"key": fw.key, "note": fw.note} for fw in frameworks],
        "skipped": skipped,
        "machine": runs[0]["machine"],
        "results": runs[0]["results"],
        "targets": runs[0]["targets"],
        "runs": runs,
    }
    atomic_write_text(out_path, json.dumps(report, indent=2) + "\n")
    print(f"JSON: {out_path}")
    for s in skipped:
        print(f"skipped {s['framework']}: {s['reason']}")
    if not quick and not args.no_readme:
        where = write_readme(markdown(report), args.readme, RESULTS / "train_throughput.md")
        print(f"table written to {where}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

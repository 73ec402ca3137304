"""``snn-attack``: attack a model on a target, beside the reference (the model itself), on a data set's test split.

    snn-attack MODEL.pt --target lava --attack transfer,square,adaptive --eps 0.1 --limit 20 --json

What can be done to a target, the target says: torch, norse, snntorch offer their own network with gradients
(white-box attacks on the target itself); loihi-emu and lava offer none (transfer from the reference, Square,
adaptive PGD through loihi-emu's differentiable mode); lava answers queries through loihi-emu, bit-exact and much
faster, and the clean inputs and every final adversarial example are then re-run on Lava, whose verdicts are the
target's numbers, compared with the proxy's. ``--attack`` takes one name or a comma-separated list of those
below (``snnkit.attack.registry``): the gradient attacks need a target with gradients.
Defaults: PGD and transfer crafting 20 steps, APGD 100, adaptive PGD 50 (``--steps`` sets them all), Square
1000 queries per sample (``--queries``).

JSON (``--json``): target, attack, eps, norm, n_samples, seed, clean_accuracy, robust_accuracy (the target's
per-sample worst case over the attacks), worst_case_accuracy, transfer_success_rate, attacks (per attack: name,
kind, family, eps, norm, robust_accuracy, seconds, queries, transfer success rate, and where a query proxy
answered, the proxy's robust accuracy), warnings (gradient-masking checks), queries (Square's mean/median per
sample, what the target answered), reference (the same for the model itself), evaluations (reference and target,
the form ``snn-report --attack-json`` reads), recheck and proxy (where a proxy answered: outputs_bit_exact,
verdicts_agree, the target's wall time), settings, notes, wall_s. ``--save-adv OUT.npz``: x, y and per side (reference_*, target_*) the attack names,
the adversarial examples ``[A, N, ...]`` and the per-sample correctness ``[A, N]``.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from snnkit.cli.common import add_json_flag, check_data_dir, either, emit, run, sample_session

SETTING_FLAGS = {"--steps": "steps", "--queries": "queries", "--eot": "eot", "--surrogate": "surrogates"}
"""Attack settings by flag and the :class:`~snnkit.attack.registry.Settings` field they set; each is refused
without an attack that reads it (``AttackSpec.reads``)."""


def parser() -> argparse.ArgumentParser:
    from snnkit.attack.registry import ATTACKS
    from snnkit.deploy.base import REFERENCE, target_names

    p = argparse.ArgumentParser(prog="snn-attack", description=__doc__ + "\nattacks:\n" + "\n".join(
        f"  {a.name:<10} {a.help}" for a in ATTACKS.values()), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", metavar="MODEL.pt", help="model file (snn-train)")
    p.add_argument("--target", default=REFERENCE, help=f"{' | '.join(target_names())} (default {REFERENCE})")
    p.add_argument("--attack", required=True, metavar="NAME[,NAME...]", help=", ".join(ATTACKS))
    p.add_argument("--eps", type=float, required=True, help="perturbation budget in input units ([0, 1] scale)")
    p.add_argument("--norm", default="Linf", choices=("Linf", "L2"), help="threat model (default Linf)")
    p.add_argument("--steps", type=int, help="iterations of every gradient attack (default: PGD/transfer 20, "
                                             "APGD 100, adaptive 50)")
    p.add_argument("--queries", type=int, help="Square's query budget per sample (default 1000)")
    p.add_argument("--eot", type=int, help="gradient draws averaged per step (Poisson inputs; default 1)")
    p.add_argument("--surrogate", action="append", metavar="SPEC",
                   help="ensemble surrogate (repeatable; default: the standard set of triangle, rectangular, "
                        "escape, atan, fast sigmoid, sigmoid, straight-through)")
    p.add_argument("--dataset", help="data set (default: the one the model was trained on)")
    p.add_argument("--data-dir", help="folder of data sets read from files")
    p.add_argument("--limit", type=int, help="the first N test samples")
    p.add_argument("--seed", type=int, default=0, help="seed of every attack (default 0)")
    p.add_argument("--batch-size", type=int, default=128, help="samples per attack batch (default 128)")
    p.add_argument("--device", default="auto", help="reference, torch target and emulator: cpu | cuda | auto")
    p.add_argument("--save-adv", metavar="OUT.npz", help="write adversarial examples and per-sample correctness")
    p.add_argument("-o", "--output", metavar="FILE.json", help="also write the JSON result to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars or phase messages on stderr")
    p.add_argument("--distributed", action="store_true", help="one of several processes started by torchrun "
                   "(torchrun --nproc-per-node N -m snnkit.cli.attack ... --distributed): each attacks a range of "
                   "whole batches (one Lava worker per process), rank 0 gathers them and writes one result, equal "
                   "to one process's (times excepted)")
    add_json_flag(p)
    return p


def _dataset_name(args: argparse.Namespace, meta: dict) -> str:
    if args.dataset:
        return args.dataset
    name = meta.get("dataset")
    if not isinstance(name, str):
        raise ValueError(f"{args.model}: the model file does not say which data set it was trained on; give --dataset")
    return name


def check_settings(args: argparse.Namespace, attacks: list[str]) -> None:
    """Refuse an attack setting that none of ``attacks`` reads, naming the attacks that do."""
    from snnkit.attack.registry import readers

    for flag, setting in SETTING_FLAGS.items():
        users = readers(setting)
        if getattr(args, flag.lstrip("-")) is not None and not set(users) & set(attacks):
            raise ValueError(f"{flag} needs --attack {either(users)}")


def _main(args: argparse.Namespace) -> int:
    with sample_session(args, "snn-attack"):
        return _attack(args)


def _attack(args: argparse.Namespace) -> int:
    import snnkit
    from snnkit import distributed
    from snnkit import data
    from snnkit.attack.ensemble import DEFAULT_SURROGATES
    from snnkit.atomic import atomic_write, save_npz
    from snnkit.attack.reattack import reattack
    from snnkit.attack.registry import Settings, parse_attacks
    from snnkit.deploy.base import make_target
    from snnkit.deploy.torch_target import resolve_device
    from snnkit.export.exporter import to_nir
    from snnkit.models.io import read
    from snnkit.nn.surrogate import parse as parse_surrogate

    attacks = parse_attacks(args.attack)
    check_settings(args, attacks)
    if args.limit is not None and args.limit < 1:
        raise ValueError(f"--limit must be >= 1, not {args.limit}")
    settings = Settings(eps=args.eps, norm=args.norm, steps=args.steps, seed=args.seed, batch_size=args.batch_size,
                        queries=Settings.queries if args.queries is None else args.queries,
                        eot=Settings.eot if args.eot is None else args.eot,
                        surrogates=tuple(args.surrogate) if args.surrogate else DEFAULT_SURROGATES,
                        device=str(resolve_device(args.device)), progress=not args.quiet and distributed.is_main())
    for spec in settings.surrogates:
        parse_surrogate(spec)  # a bad spec fails before any work
    meta = read(args.model).get("meta") or {}
    model = snnkit.load(args.model)
    dataset = _dataset_name(args, meta)
    check_data_dir(args.data_dir, dataset)
    shape = tuple(model.config.get("input_shape", ()))
    if tuple(data.info(dataset).input_shape) != shape:
        raise ValueError(f"{args.model}: the model takes inputs of shape {list(shape)}, data set {dataset} has "
                         f"{list(data.info(dataset).input_shape)}")
    x, y = data.load(dataset, "test", limit=args.limit, data_dir=args.data_dir, timesteps=model.timesteps)
    try:
        graph = to_nir(model)
    except ValueError as exc:
        raise ValueError(f"{args.model}: {exc}") from None

    def log(message: str) -> None:
        if not args.quiet and distributed.is_main():
            print(f"snn-attack: {message}", file=sys.stderr, flush=True)

    target = make_target(args.target, device=settings.device, batch_size=settings.batch_size)
    outcome = reattack(model, graph, target, attacks, x, y, settings, log=log)
    if outcome is None:  # another rank than 0: rank 0 writes the result
        return 0
    result = {"model": str(args.model), "dataset": dataset, "split": "test", "limit": args.limit,
              **outcome.summary}
    if args.save_adv:
        save_npz(Path(args.save_adv), outcome.arrays)
        result["saved_adversarial"] = str(args.save_adv)
    if args.output:
        text = json.dumps(result, indent=2, default=float)
        atomic_write(Path(args.output), lambda tmp: Path(tmp).write_text(text))
    emit(result, args.json, _human)
    return 0


def _pct(v) -> str:
    return "-" if v is None else f"{100 * v:5.1f}%"


def _human(r: dict) -> str:
    ref, target = r["reference"], r["target"]
    proxy = r.get("proxy", {})
    emu = {a["name"]: a.get("proxy_robust_accuracy") for a in r["attacks"]} if proxy else {}
    limit = f" (first {r['limit']})" if r.get("limit") else ""
    lines = [f"{r['model']} on {target}: {r['dataset']} test split{limit}, {r['n_samples']} samples, "
             f"eps {r['eps']:g} ({r['norm']}), seed {r['seed']}"]
    head = f"  {'':28s}{'reference':>11s}{target:>11s}" + (f"{proxy['target']:>11s}" if emu else "")
    lines.append(head)

    def row(label: str, a, b, c=None) -> str:
        return f"  {label:28s}{_pct(a):>11s}{_pct(b):>11s}" + (f"{_pct(c):>11s}" if emu else "")

    lines.append(row("clean accuracy", ref["clean_accuracy"], r["clean_accuracy"],
                     proxy.get("clean_accuracy")))
    ref_attacks = {a["name"]: a for a in ref["attacks"]}
    tgt_attacks = {a["name"]: a for a in r["attacks"]}
    for name in dict.fromkeys([*ref_attacks, *tgt_attacks]):
        lines.append(row(name, ref_attacks.get(name, {}).get("robust_accuracy"),
                         tgt_attacks.get(name, {}).get("robust_accuracy"), emu.get(name)))
    lines.append(row("worst case", ref["worst_case_accuracy"], r["worst_case_accuracy"],
                     proxy.get("worst_case_accuracy")))
    if r.get("transfer_success_rate") is not None or ref.get("transfer_success_rate") is not None:
        lines.append(row("transfer success rate", ref.get("transfer_success_rate"), r.get("transfer_success_rate")))
    for label, q in (("reference", ref.get("queries", {})), (target, r.get("queries", {}))):
        for name, used in q.items():
            if name != "answered":
                lines.append(f"  {name} on {label}: {used['mean_per_sample']:.1f} queries per attacked sample "
                             f"(median {used['median_per_sample']:g}, {used['attacked_samples']} samples)")
        if "answered" in q:
            a = q["answered"]
            lines.append(f"  {label}: {a['queries']} queries answered by {a['by']} in {a['seconds']:.2f} s "
                         f"({a['queries_per_s']:.0f} queries/s)")
    if "recheck" in r:
        c = r["recheck"]
        lines.append(f"  re-check on {c['on']}: {c['samples']} inputs (clean + every adversarial example); outputs "
                     f"bit-exact with {c['answered_by']}: {'yes' if c['outputs_bit_exact'] else 'NO'}; verdicts agree: "
                     f"{'yes' if c['verdicts_agree'] else 'NO (%d differ)' % c['differing_verdicts']}; "
                     f"{c['on']} {c['target_wall_s']:.1f} s")
    lines += [f"  warning (reference): {w}" for w in ref["warnings"]]
    lines += [f"  warning ({target}): {w}" for w in r["warnings"]]
    lines += [f"  note: {n}" for n in r.get("notes", [])]
    lines.append(f"  wall {r['wall_s']:.1f} s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    return run("snn-attack", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

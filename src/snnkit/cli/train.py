"""``snn-train``: train a spiking network on a data set and write ``OUT/model.pt`` and ``OUT/metrics.json``."""
from __future__ import annotations

import argparse

from snnkit.cli.common import add_json_flag, add_threads_flag, apply_threads, check_data_dir, either, emit, run

ARCH_OPTIONS = {"hidden": ["mlp"], "channels": ["convnet"], "fc": ["convnet", "vgg"], "vgg_depth": ["vgg"],
                "vgg_width": ["vgg"]}
"""Model options (``argparse`` dests) and the architectures that read them (see also :data:`CONFIG_OPTIONS`)."""
CONFIG_OPTIONS = ("pool", "sew", "width")
"""Model options that are config keys with a default per architecture: an architecture reads one when its
defaults (``snnkit.models.build.ARCH_DEFAULTS``) set it."""
PRUNE_OPTIONS = ("prune", "prune_epochs", "prune_lr")
"""Options that only matter with ``--sparsity S > 0``."""
CONVERT_OPTIONS = ("ann_epochs", "ann_method", "ann_lr", "ann_finetune_epochs", "percentile", "threshold_scale")
"""Options that only matter with ``--pipeline convert`` (None: ``ConversionConfig``'s default)."""


def parser() -> argparse.ArgumentParser:
    from snnkit.data import DATASETS
    from snnkit.models import ARCHS

    p = argparse.ArgumentParser(prog="snn-train", description=__doc__)
    p.add_argument("--dataset", default="digits", choices=DATASETS, help="data set (default: digits)")
    p.add_argument("--data-dir", help="folder of the data set's released files, never downloaded: MNIST/Fashion-MNIST "
                   "IDX files, cifar-10-batches-py, cifar-100-python, tiny-imagenet-200, N-MNIST Train/Test (or "
                   "train.zip/test.zip), DVS-Gesture ibmGestureTrain/Test, CIFAR10-DVS class folders of .aedat4 "
                   "(snnkit.data describes each layout)")
    p.add_argument("--augment", action=argparse.BooleanOptionalAction, default=None,
                   help="random crop (zero padding 4) and horizontal flip of training batches, seeded by --seed; "
                   "never at evaluation (default: on for cifar10, cifar100, tiny-imagenet; off for the others)")
    p.add_argument("--model", default="mlp", choices=ARCHS, help="architecture (default: mlp); vgg11, vgg16, resnet19, "
                   "sew-resnet18/34 and wrn16-4 are the seed papers' CIFAR networks (snnkit.models.paper)")
    p.add_argument("--hidden", type=int, nargs="+", help="MLP hidden widths (default: 512)")
    p.add_argument("--channels", type=int, nargs="+", help="ConvNet conv widths, one pool each (default: 32 64)")
    p.add_argument("--fc", type=int, nargs="*", help="ConvNet/VGG hidden linear widths (default convnet: 256)")
    p.add_argument("--vgg-depth", type=int, help="VGG: number of conv layers (default 5)")
    p.add_argument("--vgg-width", type=int, help="VGG: width of the first stage, doubled per stage (default 32)")
    p.add_argument("--pool", choices=["avg", "max"], help="VGG pooling (default avg; max pooling of spikes exports "
                   "to NIR as its exact equivalent, window sum -> IF neuron of threshold 0.5)")
    p.add_argument("--sew", choices=["add", "iand"], help="SEW-ResNet connect function (default add; iand trains "
                   "but does not export to NIR/Loihi)")
    p.add_argument("--width", type=float, help="paper models (vgg11...wrn16-4): multiplier of every channel and "
                   "hidden width (default 1: the paper's widths)")
    p.add_argument("--timesteps", type=int, default=8, help="time steps T (default 8)")
    p.add_argument("--encoder", help="direct | poisson[:seed=S] | latency[:x_min=X] | frames (default: frames for the "
                   "event sets nmnist, dvs-gesture, cifar10-dvs, binned into --timesteps frames; direct otherwise)")
    p.add_argument("--neuron", default="lif", choices=["lif", "if"], help="neuron model (default lif)")
    p.add_argument("--beta", type=float, default=0.9, help="LIF membrane decay per step, 1 - dt/tau (default 0.9)")
    p.add_argument("--threshold", type=float, default=1.0, help="firing threshold (default 1.0)")
    p.add_argument("--reset", default="zero", choices=["zero", "subtract"], help="reset mode (default zero)")
    p.add_argument("--surrogate", default="atan:alpha=2", help="surrogate spec, e.g. atan:alpha=2, triangle:gamma=1")
    p.add_argument("--learn-beta", action="store_true", help="train the decay")
    p.add_argument("--learn-threshold", action="store_true", help="train the threshold")
    p.add_argument("--batchnorm", action=argparse.BooleanOptionalAction, default=None,
                   help="BatchNorm over time after each weighted layer (default: on for convnet/vgg)")
    p.add_argument("--dt", type=float, default=1e-3, help="step length in seconds, written to NIR (default 1e-3)")
    p.add_argument("--epochs", type=int, default=30, help="epochs (default 30)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--optimizer", default="adam", choices=["adam", "sgd"])
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="cosine", choices=["cosine", "none"])
    p.add_argument("--method", default="standard", help="training method spec: standard, pgd-at, trades, fgsm-at "
                   "(parameters after a colon, e.g. pgd-at:eps=0.1)")
    p.add_argument("--reg", action="append", default=[], metavar="SPEC", help="regulariser spec, repeatable")
    p.add_argument("--seed", type=int, default=0)
    sparse = p.add_argument_group("sparse connectivity (snnkit.train.sparsity)")
    sparse.add_argument("--sparsity", type=float, default=0.0, help="fraction of Linear/Conv weights pruned (0.9 keeps "
                        "10%%); masks are chosen first, then frozen (default 0: dense)")
    sparse.add_argument("--prune", choices=["magnitude", "hydra", "harp"],
                        help="how masks are chosen (default: magnitude; hydra for --pipeline convert)")
    sparse.add_argument("--prune-epochs", type=int, help="score-training epochs for hydra/harp, dense epochs before "
                        "magnitude pruning (default: hydra/harp round(EPOCHS / 4), at least 1, the ratio of 20 "
                        "score-training to 80 fine-tuning epochs of the robust-conversion paper; magnitude 0; "
                        "10 for --pipeline convert)")
    sparse.add_argument("--prune-lr", type=float, help="Adam learning rate of scores/rates (default 0.01)")
    sparse.add_argument("--init", help="start from this model.pt instead of a fresh model (its config is used)")
    conv = p.add_argument_group("robust ANN-to-SNN conversion (--pipeline convert; snnkit.train.conversion)")
    conv.add_argument("--pipeline", choices=["direct", "convert"], default="direct",
                      help="direct: train the SNN; convert: robust ANN -> pruning -> weight transfer and thresholds "
                      "-> SNN fine-tuning with --method/--epochs (use --neuron if --reset subtract --surrogate "
                      "triangle:gamma=1)")
    conv.add_argument("--ann-epochs", type=int, help="ANN training epochs (default 30)")
    conv.add_argument("--ann-method", help="ANN training method spec (default trades)")
    conv.add_argument("--ann-lr", type=float, help="ANN Adam learning rate (default 1e-3)")
    conv.add_argument("--ann-finetune-epochs", type=int, help="sparse ANN fine-tuning epochs (default 10)")
    conv.add_argument("--percentile", type=float, help="threshold percentile of pre-activations (99.7)")
    conv.add_argument("--threshold-scale", type=float, help="threshold = scale x percentile (0.3)")
    qat = p.add_argument_group("quantisation-aware fine-tuning (snnkit.train.qat)")
    qat.add_argument("--qat", choices=["loihi"], help="fine-tune the --init model through the Loihi 2 fixed-point "
                     "forward pass (the bit-exact emulator on the model quantised as snn-export/snn-deploy do it, "
                     "re-quantised after every step; straight-through gradients to the float weights). model.pt "
                     "stays a float model whose Lava export is what was trained; metrics.json adds the loihi-emu "
                     "and float test accuracy before and after. Composes with --method (adversarial examples on "
                     "the quantised model); masks of pruned models stay frozen; not with --reg. Needs --init; a "
                     "few epochs at a small --lr (e.g. --epochs 5 --lr 2e-4)")
    p.add_argument("--limit", type=int, help="evaluate on the first N test samples only")
    p.add_argument("--device", default="cpu", help="cpu | cuda | auto (default cpu)")
    add_threads_flag(p)
    p.add_argument("--amp", choices=["bf16"], help="mixed precision: the forward and backward passes under bfloat16 "
                   "autocast (weights, optimiser and the LIF recurrences stay float32); CUDA, or CPU where torch "
                   "supports it")
    p.add_argument("--distributed", action="store_true", help="one of several processes started by torchrun "
                   "(torchrun --nproc-per-node N -m snnkit.cli.train ... --distributed): DistributedDataParallel, gloo "
                   "on CPU, NCCL on CUDA (one GPU per process); --batch-size stays the global batch, rank 0 writes "
                   "the files; the result equals the single-process run's (same seed) up to rounding")
    p.add_argument("--out", required=True, help="output folder for model.pt, metrics.json, checkpoint.pt")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_json_flag(p)
    return p


def model_config(args: argparse.Namespace) -> dict:
    """The model part of the config from the command line (unset options keep the builder's defaults)."""
    from snnkit.models import vgg_config
    from snnkit.nn import build_encoder, parse_surrogate

    parse_surrogate(args.surrogate)  # fail early on a bad spec
    encoder = build_encoder(args.encoder or default_encoder(args.dataset), args.timesteps).spec()
    cfg = {"arch": args.model, "timesteps": args.timesteps, "encoder": encoder, "neuron": args.neuron,
           "beta": args.beta, "threshold": args.threshold, "reset": args.reset, "surrogate": args.surrogate,
           "learn_beta": args.learn_beta, "learn_threshold": args.learn_threshold, "dt": args.dt}
    optional = {"hidden": args.hidden, "channels": args.channels, "fc": args.fc, "batchnorm": args.batchnorm,
                "pool": args.pool, "sew": args.sew, "width": args.width}
    cfg.update({k: v for k, v in optional.items() if v is not None})
    if args.vgg_depth or args.vgg_width:
        cfg["vgg"] = vgg_config(args.vgg_depth or 5, args.vgg_width or 32)
    return cfg


def default_encoder(dataset: str) -> str:
    """``frames`` for event data (samples with their own time axis), else ``direct``."""
    from snnkit.data import info

    return "frames" if info(dataset).event_frames else "direct"


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def given(args: argparse.Namespace, dests) -> dict:
    """``{dest: value}`` of the options among ``dests`` that were given (not None)."""
    return {d: getattr(args, d) for d in dests if getattr(args, d) is not None}


def check_options(args: argparse.Namespace) -> None:
    """Refuse an option that the rest of the command line would leave unused, naming the option it needs."""
    from snnkit.models.build import ARCH_DEFAULTS

    readers = {key: [arch for arch, defaults in ARCH_DEFAULTS.items() if key in defaults] for key in CONFIG_OPTIONS}
    for dest, archs in {**ARCH_OPTIONS, **readers}.items():
        if getattr(args, dest) is not None and args.model not in archs:
            raise ValueError(f"{_flag(dest)} needs --model {either(archs)}")
    for dest in given(args, PRUNE_OPTIONS):
        if args.sparsity == 0:
            raise ValueError(f"{_flag(dest)} needs --sparsity S > 0")
    for dest in given(args, CONVERT_OPTIONS):
        if args.pipeline != "convert":
            raise ValueError(f"{_flag(dest)} needs --pipeline convert")
    if args.distributed and (args.qat or args.pipeline == "convert"):
        raise ValueError(f"--distributed trains with --pipeline direct and without --qat (not "
                         f"{'--qat' if args.qat else '--pipeline convert'})")
    if args.qat and args.pipeline == "convert":
        raise ValueError("--qat fine-tunes a trained model, not --pipeline convert (fine-tune its model.pt with "
                         "--init MODEL.pt --qat loihi)")
    check_data_dir(args.data_dir, args.dataset)
    from snnkit.data import info, input_steps
    from snnkit.data.augment import Augmentation

    if args.pipeline == "convert" and info(args.dataset).event_frames:
        raise ValueError(f"--pipeline convert trains an ANN on static inputs; {args.dataset} holds event frames: "
                         "train the SNN directly (--pipeline direct)")
    input_steps(args.dataset, {"encoder": args.encoder or default_encoder(args.dataset)})
    Augmentation.for_training(args.dataset, args.augment, args.seed)


def prune_method(args: argparse.Namespace) -> str:
    return args.prune or ("hydra" if args.pipeline == "convert" else "magnitude")


def prune_epochs(args: argparse.Namespace) -> int:
    """``--prune-epochs``, else 10 for ``--pipeline convert``; for hydra/harp ``round(epochs / 4)``, at least 1 (the
    paper's 20 score-training epochs before 80 of fine-tuning); 0 for magnitude (prune the initial weights)."""
    if args.prune_epochs is not None:
        return args.prune_epochs
    if args.pipeline == "convert":
        return 10
    return max(1, round(args.epochs / 4)) if prune_method(args) in ("hydra", "harp") else 0


def _main(args: argparse.Namespace) -> int:
    from snnkit import distributed

    check_options(args)
    apply_threads(args.threads)
    with distributed.session(args.distributed, _device(args), "snn-train"):
        metrics, main = _train(args), distributed.is_main()
    if main:
        _print(args, metrics)
    return 0


def _device(args: argparse.Namespace) -> str:
    from snnkit.deploy.torch_target import resolve_device

    return str(resolve_device(args.device))


def train_config(args: argparse.Namespace):
    """The :class:`~snnkit.train.TrainConfig` of the command line."""
    from snnkit.train import TrainConfig

    sparse = {} if args.pipeline == "convert" else dict(
        sparsity=args.sparsity, prune=prune_method(args), prune_epochs=prune_epochs(args), init=args.init,
        **given(args, ["prune_lr"]))
    return TrainConfig(dataset=args.dataset, model=model_config(args), epochs=args.epochs,
                       batch_size=args.batch_size, lr=args.lr, optimizer=args.optimizer,
                       weight_decay=args.weight_decay, schedule=args.schedule, seed=args.seed, method=args.method,
                       regs=args.reg, data_dir=args.data_dir, limit=args.limit, device=_device(args), qat=args.qat,
                       augment=args.augment, amp=args.amp, **sparse)


def _train(args: argparse.Namespace) -> dict:
    from snnkit.train import train

    convert = args.pipeline == "convert"
    cfg = train_config(args)
    if cfg.qat:
        from snnkit.train.qat import check

        check(cfg)
    if convert:
        from snnkit.train.conversion import ConversionConfig, convert_pipeline

        if args.init or args.resume:
            raise ValueError("--pipeline convert starts from scratch; --init and --resume do not apply")
        conv = ConversionConfig(prune=prune_method(args), sparsity=args.sparsity, prune_epochs=prune_epochs(args),
                                **given(args, ["prune_lr", *CONVERT_OPTIONS]))
        return convert_pipeline(cfg, conv, args.out, progress=not args.no_progress)
    return train(cfg, args.out, resume=args.resume, progress=not args.no_progress)


def _print(args: argparse.Namespace, metrics: dict) -> None:
    summary = {k: metrics[k] for k in ("dataset", "test_accuracy", "train_accuracy", "train_time_s")}
    summary.update(model=metrics.get("model", {}).get("arch", args.model), out=str(args.out), epochs=args.epochs,
                   **{k: v for k, v in metrics.items() if k not in summary and k not in ("history", "model", "train_config")})
    emit(summary, args.json, _summary_line)


def _summary_line(s: dict) -> str:
    line = (f"{s['model']} on {s['dataset']}: test accuracy {s['test_accuracy']:.4f}, trained in {s['train_time_s']:.1f} s "
            f"-> {s['out']}/model.pt")
    if "qat" in s:
        q = s["qat"]
        line += (f"\nloihi-emu test accuracy {q['loihi_accuracy_before']:.4f} -> {q['loihi_accuracy_after']:.4f} (float "
                 f"{q['float_accuracy_before']:.4f} -> {q['float_accuracy_after']:.4f})")
    return line


def main(argv: list[str] | None = None) -> int:
    return run("snn-train", _main, parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())

"""``signbart``: one subcommand per library call. Parsing lives here and nowhere else."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import yaml

from signbart import __version__
from signbart.errors import STORAGE_ERRNOS, StorageError, UserError, storage_error
from signbart.layouts import LAYOUTS

log = logging.getLogger("signbart")
ADDRESS_HELP = ("Ray cluster to join: HOST:6379, or auto for a `ray start` cluster on this "
                "machine (default: $RAY_ADDRESS if set, else a new Ray in this process)")


def _csv_list(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _setting(assignment: str) -> tuple[str, object]:
    """``a.b.c=VALUE`` as (``a.b.c``, VALUE parsed as YAML)."""
    key, sep, value = assignment.partition("=")
    if not sep or not key:
        raise UserError(f"--set {assignment!r}: expected KEY=VALUE, e.g. train.augment.hand_drop=0.3")
    return key, yaml.safe_load(value)


# ------------------------------------------------------------------ handlers

def cmd_synth(a) -> int:
    from signbart.synth import synthesize

    synthesize(a.out, a.signers, a.classes, a.reps, a.layout, a.seed, overwrite=a.overwrite)
    print(f"wrote synthetic dataset {a.out} ({a.signers} signers x {a.classes} classes x "
          f"{a.reps} reps, layout {a.layout})")
    return 0


def cmd_import_pkl(a) -> int:
    from signbart.import_pkl import import_pkl

    n = import_pkl(a.src, a.out, trust=a.trust_pickle, overwrite=a.overwrite)
    print(f"imported {n} samples into {a.out}")
    return 0


def cmd_extract(a) -> int:
    from signbart.extract import extract_dir

    summary = extract_dir(a.videos, a.out, layout=a.layout, workers=a.workers, address=a.address,
                          flip=a.flip, flip_signers=_csv_list(a.flip_signers) if a.flip_signers
                          else None, pattern=a.pattern, resume=a.resume,
                          overwrite=a.overwrite, force_settings=a.force_settings,
                          flush_seconds=a.flush_seconds)
    print(summary)
    return summary.exit_status(a.allow_failures)


def cmd_train(a) -> int:
    from signbart.config import SEED, build_experiment, load_variant
    from signbart.results import write_rows
    from signbart.trial import run_trial

    settings = {f"train.{k}": v for k, v in (("epochs", a.epochs), ("lr", a.lr),
                                             ("batch_size", a.batch_size),
                                             ("n_val_signers", a.n_val_signers)) if v is not None}
    settings.update(_setting(s) for s in a.set or [])
    overrides = {k: v for k, v in (("quant", _csv_list(a.quant) if a.quant else None),
                                   ("threads", a.threads),
                                   ("baseline", False if a.no_baseline else None)) if v is not None}
    if (a.ablation or a.storage) and not a.spec:
        raise UserError("train: --ablation and --storage only go with --spec")
    if a.spec:
        from signbart.sweep import fold_experiment
        from signbart.sweepspec import load_spec

        spec = load_spec(a.spec, data=a.data)
        variant = load_variant(a.config).name if a.config else None
        exp = fold_experiment(spec, a.holdout, spec.seeds[0] if a.seed is None else a.seed,
                              variant, a.ablation or "", a.storage, settings=settings,
                              **overrides)
    else:
        if not (a.config and a.data):
            raise UserError("train: give --config VARIANT.yaml and --data DIR, or --spec SWEEP.yaml")
        exp = build_experiment(a.data, load_variant(a.config), a.holdout,
                               seed=SEED if a.seed is None else a.seed, settings=settings,
                               where="signbart train", **overrides)
    rows = run_trial(exp, a.out)
    path = write_rows(rows, str(Path(a.out) / "results.parquet"))
    params = next((r["params"] for r in rows if r.get("params")), None)
    print(f"SignBART {exp.variant.name}: {params:,} parameters" if params else "")
    for r in rows:
        top1 = f"{r['top1']:.4f}" if r.get("top1") is not None else "-"
        print(f"  {r['model_kind']:9s} {r['quant']:5s} {r['status']:6s} top1={top1} "
              f"{r.get('model_path') or ''} {r.get('error') or ''}")
    print(f"results: {path}")
    return 0 if all(r["status"] == "ok" for r in rows) else 1


def cmd_evaluate(a) -> int:
    from signbart.config import load_variant
    from signbart.data import open_dataset
    from signbart.evaluate import evaluate_tflite_file
    from signbart.storage import with_suffix

    out = a.out or with_suffix(a.model, ".eval.json")
    variant = load_variant(a.config) if a.config else None
    result = evaluate_tflite_file(a.model, variant, open_dataset(a.data), holdout=a.holdout,
                                  out_json=out)
    print(json.dumps({k: result[k] for k in ("top1", "top5", "macro_f1", "model_bytes",
                                             "params", "flops", "latency_ms_p50",
                                             "latency_ms_p90") if k in result}, indent=1))
    print(f"written: {out}")
    return 0


def cmd_predict(a) -> int:
    from signbart.predict import predict_videos

    results = predict_videos(a.videos, a.model, top_k=a.top, mirror=a.mirror)
    if a.json:
        print(json.dumps(results, indent=1, ensure_ascii=False))
    else:
        for r in results:
            print(r["video"] + (" (mirrored)" if r.get("mirrored") else ""))
            for p in r.get("top", []):
                print(f"  {p['probability']:6.1%}  {p['label']}  {p['gloss']}")
            if "error" in r:
                print(f"  failed: {r['error']}")
    failed = [r for r in results if "error" in r]
    for r in failed:
        print(f"signbart predict: error: {r['video']}: {r['error']}", file=sys.stderr)
    return 1 if failed else 0


def cmd_sweep(a) -> int:
    from signbart.sweep import run_sweep

    summary = run_sweep(a.spec, address=a.address, storage=a.storage, resume=a.resume,
                        trust_storage=a.trust_storage,
                        max_concurrent=a.max_concurrent, dry_run=a.dry_run, smoke=a.smoke,
                        data=a.data, extend=a.extend, yes=a.yes)
    print(summary)
    return summary.exit_code


def cmd_report(a) -> int:
    from signbart.report import build_report

    paths = build_report(a.results, a.out, formats=tuple(_csv_list(a.format)),
                         overwrite=a.overwrite, handedness=a.handedness, latency=a.latency,
                         published=a.published)
    print(f"report: {paths.html if getattr(paths, 'html', None) else a.out}")
    return 0


def cmd_compare(a) -> int:
    from signbart.compare import compare, to_markdown
    from signbart.storage import write_text

    table = compare(a.a, a.b, a.a_variant, a.b_variant)
    text = to_markdown(table, a.a, a.b)
    if a.out:
        write_text(a.out, table.to_csv(index=False))
        write_text(a.out.removesuffix(".csv") + ".md", text)
    print(text, end="")
    return 0


# ------------------------------------------------------------------ parser

def _verbosity(parser: argparse.ArgumentParser, default) -> None:
    """-v/-q, accepted before and after the subcommand (SUPPRESS: a subcommand's unset flag
    does not overwrite the top-level one)."""
    g = parser.add_mutually_exclusive_group()
    g.add_argument("-v", "--verbose", action="store_const", const=logging.DEBUG, dest="level",
                   default=default, help="debug logging, Ray/Tune start-up and trial configs")
    g.add_argument("-q", "--quiet", action="store_const", const=logging.WARNING, dest="level",
                   default=default, help="warnings and errors only")


class _Help(argparse.ArgumentDefaultsHelpFormatter):
    """Every option's help ends with its default; on/off flags, and options whose default is
    worked out at run time (None), say it in their own words instead."""

    def _get_help_string(self, action):
        if action.nargs == 0 or action.default is None or "default" in (action.help or ""):
            return action.help
        return super()._get_help_string(action)


def build_parser() -> argparse.ArgumentParser:
    fmt = {"formatter_class": _Help}
    p = argparse.ArgumentParser(prog="signbart", description=(
        "Leave-one-signer-out SignBART sweeps on Ray: keypoints -> trials -> TFLite -> reports."),
        **fmt)
    p.add_argument("--version", action="version", version=f"signbart {__version__}")
    _verbosity(p, logging.INFO)
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    common = argparse.ArgumentParser(add_help=False)
    _verbosity(common, argparse.SUPPRESS)
    fmt["parents"] = [common]

    s = sub.add_parser("synth", help="write a synthetic keypoint dataset (tests, quickstart)",
                       **fmt)
    s.add_argument("out", help="dataset directory to write")
    s.add_argument("--signers", type=int, default=4, help="number of synthetic signers")
    s.add_argument("--classes", type=int, default=10, help="number of sign classes")
    s.add_argument("--reps", type=int, default=5, help="repetitions per signer and class")
    s.add_argument("--layout", default="holistic-65", choices=LAYOUTS,
                   help="stored keypoint layout")
    s.add_argument("--seed", type=int, default=0, help="same seed, same dataset")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    s.set_defaults(func=cmd_synth)

    s = sub.add_parser("import-pkl", help="convert reference SignBART .pkl samples to a dataset",
                       **fmt)
    s.add_argument("src", help="folder with <split>/<class>/<user>_<class>_<rep>.pkl and "
                   "label2id.json")
    s.add_argument("out", help="dataset directory to write")
    s.add_argument("--trust-pickle", action="store_true",
                   help="allow unpickling SRC (pickle runs arbitrary code: only for trusted files)")
    s.add_argument("--overwrite", action="store_true", help="replace a dataset already in OUT")
    s.set_defaults(func=cmd_import_pkl)

    s = sub.add_parser("extract", help="MediaPipe Holistic keypoints from videos, in parallel "
                       "on Ray", **fmt)
    s.add_argument("videos", help="folder of videos (searched recursively)")
    s.add_argument("out", help="dataset directory to write")
    s.add_argument("--layout", default="holistic-90", choices=LAYOUTS,
                   help="stored keypoint layout (holistic-90 serves every variant)")
    s.add_argument("--address", help=ADDRESS_HELP)
    s.add_argument("--workers", type=int, help="MediaPipe actors (default: one per CPU)")
    s.add_argument("--flip", action="store_true", help="also write a mirrored copy of every video")
    s.add_argument("--flip-signers", help="comma-separated left-handed signers to mirror "
                   "(default: from signers.csv beside the videos)")
    s.add_argument("--pattern", help="regex with named groups signer/label/repetition")
    s.add_argument("--resume", action="store_true", help="skip videos already in OUT")
    s.add_argument("--force-settings", action="store_true",
                   help="--resume even if OUT was extracted with other settings (mixes them)")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the dataset in OUT (e.g. a failed or unwanted run)")
    s.add_argument("--allow-failures", action="store_true", help="exit 0 even if videos failed")
    s.add_argument("--flush-seconds", type=float, default=60.0,
                   help="write finished videos to OUT at least this often (default 60): a "
                   "crash loses at most this much work")
    s.set_defaults(func=cmd_extract)

    s = sub.add_parser("train", help="train one LOSO fold, export and evaluate TFLite models",
                       **fmt)
    s.add_argument("--config", help="variant config YAML (configs/*.yaml); with --spec, which "
                   "of the spec's variants (default: its only one)")
    s.add_argument("--data", help="dataset directory (with --spec: replaces the spec's)")
    s.add_argument("--spec", help="sweep spec YAML: run one fold of it, resolved as the sweep "
                   "resolves it (search choice, ablation)")
    s.add_argument("--ablation", help="with --spec: the ablation arm to run (default: none)")
    s.add_argument("--storage", help="with --spec: where the sweep keeps its search choices "
                   "(default: ./ray_results)")
    s.add_argument("--holdout", required=True, help="held-out signer, or 'none' to train on all")
    s.add_argument("--seed", type=int, help="seeds the inner-validation draw, weights and data "
                   "order (default: 42, or the spec's first seed)")
    s.add_argument("--epochs", type=int, help="training epochs (default: the TrainConfig default)")
    s.add_argument("--lr", type=float, help="peak learning rate (default: the TrainConfig default)")
    s.add_argument("--batch-size", type=int, help="batch size (default: the TrainConfig default)")
    s.add_argument("--n-val-signers", type=int,
                   help="inner validation signers (default: the TrainConfig default, 1)")
    s.add_argument("--quant", help="comma list of fp32,ptq,qat,int8 (default: fp32, or the "
                   "spec's)")
    s.add_argument("--threads", type=int, help="TF threads (default: TF's own, or the spec's)")
    s.add_argument("--no-baseline", action="store_true", help="skip the linear baseline")
    s.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="typed override, e.g. train.augment.hand_drop=0.3 (repeatable)")
    s.add_argument("--out", required=True, help="run directory")
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("evaluate", help="evaluate a .tflite model with the TFLite interpreter",
                       **fmt)
    s.add_argument("--model", required=True, help=".tflite file written by train or sweep "
                   "(a path, or a URI such as s3://bucket/sweep/trial/model_fp32.tflite)")
    s.add_argument("--config", help="variant config (default: the model's own card)")
    s.add_argument("--data", required=True, help="dataset directory")
    s.add_argument("--holdout", help="signer to evaluate (default: the whole dataset)")
    s.add_argument("--out", help="JSON output, path or URI (default: beside the model)")
    s.set_defaults(func=cmd_evaluate)

    s = sub.add_parser("predict", help="recognise the sign in video(s) with an exported model",
                       **fmt)
    s.add_argument("videos", nargs="+", help="video files")
    s.add_argument("--model", required=True, help=".tflite file (its model card is inside it)")
    s.add_argument("--top", type=int, default=5, help="how many glosses to print per video")
    s.add_argument("--mirror", action="store_true",
                   help="mirror the video (a left-handed signer), for a model whose card does "
                        "not say handedness: auto (that one mirrors by itself)")
    s.add_argument("--json", action="store_true", help="print JSON instead of text")
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("sweep", help="run a holdout x seed x variant x quant grid on Ray Tune",
                       **fmt)
    s.add_argument("spec", help="sweep spec YAML (sweeps/*.yaml)")
    s.add_argument("--address", help=ADDRESS_HELP)
    s.add_argument("--storage",
                   help="results storage path or URI (s3://...); default: ./ray_results")
    s.add_argument("--data", help="dataset directory instead of the spec's `data:` (e.g. an "
                   "absolute path for a Ray job)")
    s.add_argument("--resume", action="store_true", help="continue an interrupted sweep")
    s.add_argument("--extend", action="store_true",
                   help="resume a sweep whose spec only gained cells (hold-outs, seeds, variants, "
                   "ablation arms); refused if any finished cell's settings would change")
    s.add_argument("--trust-storage", action="store_true",
                   help="with --resume, restore Tune's pickled state (tuner.pkl) from the "
                   "storage: only if nobody else can write there")
    s.add_argument("--max-concurrent", type=int,
                   help="most trials running at once (default: as many as Ray has CPUs for)")
    s.add_argument("--dry-run", action="store_true",
                   help="print the trials, their CPU-hours and wall-clock; runs no sweep")
    s.add_argument("--yes", action="store_true",
                   help="start even a sweep priced over 24 CPU-hours")
    s.add_argument("--smoke", action="store_true", help="apply the spec's smoke overrides")
    s.set_defaults(func=cmd_sweep)

    s = sub.add_parser("report", help="aggregate LOSO report from sweep result Parquet rows",
                       **fmt)
    s.add_argument("results", nargs="+", help="sweep storage dirs, results/ folders or .parquet")
    s.add_argument("--out", default="reports/latest", help="report directory")
    s.add_argument("--format", default="md,csv,html", help="comma list of md, csv, html")
    s.add_argument("--overwrite", action="store_true",
                   help="replace a report of other sweeps in --out (removes its files)")
    s.add_argument("--handedness", metavar="DATASET",
                   help="left-handed signers' clips extracted without mirroring: score the "
                        "shipped model's .tflite of each one's fold on them (handedness.csv)")
    s.add_argument("--latency", metavar="JSON",
                   help="idle-machine latencies (benchmarks/bench_latency.py) in place of the "
                        "ones timed inside the sweep; copied into the report")
    s.add_argument("--published", metavar="JSON",
                   help="another work's figures for this task (source + figures by quant), "
                        "shown beside each SignBART arm; copied into the report")
    s.set_defaults(func=cmd_report)

    s = sub.add_parser("compare", help="two sweeps over the same folds, paired cell by cell "
                       "(inner validation and held out)", **fmt)
    s.add_argument("a", help="the reference: sweep storage dir, results/ folder or .parquet")
    s.add_argument("b", help="the change, on some or all of A's folds")
    s.add_argument("--a-variant", help="A's variant, where A holds several")
    s.add_argument("--b-variant", help="B's variant, where B holds several")
    s.add_argument("--out", help="write the table as this CSV and its Markdown beside it (.md)")
    s.set_defaults(func=cmd_compare)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.level,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UserError as e:
        print(f"signbart {args.command}: error: {e}", file=sys.stderr)
        return 2
    except StorageError as e:
        print(f"signbart {args.command}: error: {e}", file=sys.stderr)
        return 1
    except OSError as e:
        if e.errno not in STORAGE_ERRNOS:
            raise
        print(f"signbart {args.command}: error: {storage_error(e, e.filename or '.')}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt as e:   # a sweep's Interrupted says what is kept and how to go on
        print(f"signbart {args.command}: {e or 'interrupted'}", file=sys.stderr)
        return getattr(e, "exit_code", 130)


if __name__ == "__main__":
    sys.exit(main())

"""``crosscam eval-mot`` and ``crosscam eval-mtmc``: tracking metrics against MOTChallenge ground truth."""

from __future__ import annotations

import configparser
import json
from pathlib import Path

import typer

from pipeline.text import counting_order, first_line
from reid.errors import CrosscamError

RULES_HELP = ("Ground-truth rules: mot17 (MOT16/17, and 6-7 column or MOT15 files) or mot20 (class 6, "
              "non-MOT vehicles, is a distractor too).")


def _check_rules(rules: str) -> str:
    """``--rules`` as the metrics take it (any case: MOT20 is mot20)."""
    from pipeline.metrics import RULES

    if rules.lower() not in RULES:
        raise CrosscamError(f"--rules {rules!r}: use one of {', '.join(RULES)}")
    return rules.lower()


def _gt_files(gt_dir: Path) -> dict[str, Path]:
    folder = gt_dir / "gt"
    if not folder.is_dir():
        meant = f" (give {gt_dir.parent}?)" if gt_dir.name == "gt" else ""
        raise CrosscamError(f"{gt_dir}: no gt/ folder; --gt is a scene folder holding gt/CAMERA.txt files{meant}")
    files = {p.stem: p for p in sorted(folder.glob("*.txt"), key=lambda p: counting_order(p.stem))}
    if not files:
        raise CrosscamError(f"{folder}: no <camera>.txt ground-truth files; generate a scene with `crosscam samples make`")
    return files


def _scene_lengths(gt_dir: Path) -> dict[str, int]:
    """Frames per camera from ``scene.json`` when the scene generator wrote one (else derived from the files)."""
    scene_file = gt_dir / "scene.json"
    if not scene_file.is_file():
        return {}
    try:
        scene = json.loads(scene_file.read_text())
        return {c["name"]: int(scene["num_frames"]) for c in scene["cameras"]}
    except (ValueError, KeyError, TypeError) as exc:
        raise CrosscamError(f"{scene_file}: unreadable scene description ({exc}); regenerate the scene") from None


def _with_warnings(scores: dict, warnings: list[str]) -> dict:
    """``scores`` with the stderr warnings as ``warnings`` (their text without "warning: "): a script
    reading the JSON learns that a camera was missing or the files do not belong together."""
    return {**scores, "warnings": [w.removeprefix("warning: ") for w in warnings]}


def _mot_sequences(root: Path) -> dict[str, Path]:
    """The sequences of a MOTChallenge folder (``SEQ/gt/gt.txt``; ``root`` itself when it is one), by name."""
    if (root / "gt" / "gt.txt").is_file():
        return {root.name: root}
    found = {p.name: p for p in sorted(root.iterdir(), key=lambda p: counting_order(p.name)) if (p / "gt" / "gt.txt").is_file()}
    if not found:
        raise CrosscamError(f"--gt {root}: a folder without SEQ/gt/gt.txt sequences; give a MOTChallenge folder (e.g. "
                            "MOT17/train) or one gt.txt file")
    return found


def _sequence_length(folder: Path) -> int | None:
    """``seqLength`` from the sequence's ``seqinfo.ini``, when it has one."""
    info = folder / "seqinfo.ini"
    if not info.is_file():
        return None
    parser = configparser.ConfigParser()
    try:
        parser.read(info)
        length = parser.getint("Sequence", "seqLength", fallback=None)
    except (configparser.Error, ValueError) as exc:
        raise CrosscamError(f"{info}: unreadable ({first_line(exc)}); fix or remove it") from None
    if length is not None and length < 1:
        raise CrosscamError(f"{info}: seqLength {length}; a sequence has at least one frame: fix or remove it")
    return length


def _predictions_of(pred: Path, name: str, only: bool) -> Path:
    """Where ``--pred`` keeps sequence ``name``'s tracks: a crosscam run's camera folder, or a TrackEval
    tracker's file; a file itself for the ``only`` sequence."""
    if only and pred.is_file():
        return pred
    if not pred.is_dir():
        raise CrosscamError(f"--pred {pred}: with a --gt folder, give a folder of predictions (a crosscam run, or a "
                            "TrackEval tracker folder)")
    tried = [pred / name / "tracks.txt", pred / f"{name}.txt", pred / "data" / f"{name}.txt"]
    found = next((p for p in tried if p.is_file()), None)
    if found is None:
        raise CrosscamError(f"--pred {pred}: no tracks for sequence {name} (looked for {', '.join(str(p) for p in tried)});"
                            f" track it (`crosscam track .../{name} --out {pred}`), or give --gt the sequences tracked")
    return found


def _eval_mot_folder(gt: Path, pred: Path, rules: str, as_json: bool) -> None:
    """``eval-mot`` over a MOTChallenge folder: a row per sequence and the COMBINED row."""
    from pipeline.metrics import COMBINED, check_comparable, evaluate_mot_sequences, read_mot_file, scores_table

    sequences, warnings = {}, []
    found = _mot_sequences(gt)
    for name, folder in found.items():
        gt_file, pred_file = folder / "gt" / "gt.txt", _predictions_of(pred, name, len(found) == 1)
        gt_rows, pred_rows = read_mot_file(gt_file, "gt"), read_mot_file(pred_file, "pred")
        warnings += [w.replace("warning: ", f"warning: sequence {name}: ", 1)
                     for w in check_comparable(gt_file, gt_rows, pred_rows, rules)]
        sequences[name] = (gt_rows, pred_rows, _sequence_length(folder))
    for warning in warnings:
        typer.echo(warning, err=True)
    scores = evaluate_mot_sequences(sequences, rules)
    if as_json:
        typer.echo(json.dumps(_with_warnings({"sequences": {n: s.as_dict() for n, s in scores.items() if n != COMBINED},
                                              "combined": scores[COMBINED].as_dict()}, warnings)))
    else:
        typer.echo(scores_table(scores))


def register(app: typer.Typer) -> None:
    """Add ``eval-mot`` and ``eval-mtmc`` to ``app``."""

    @app.command("eval-mot")
    def eval_mot(
        gt: Path = typer.Option(..., "--gt", help="Ground truth, MOTChallenge gt.txt (frame,id,x,y,w,h,flag,class,vis; "
                                "10 columns: MOT15's frame,id,x,y,w,h,conf,wx,wy,wz); or a MOTChallenge folder of "
                                "sequences (SEQ/gt/gt.txt), scored each and COMBINED."),
        pred: Path = typer.Option(..., "--pred", help="Predicted tracks, MOTChallenge (frame,id,x,y,w,h,conf,...); with "
                                  "a --gt folder, a crosscam run (SEQ/tracks.txt) or a TrackEval tracker folder "
                                  "(SEQ.txt or data/SEQ.txt)."),
        gt_tracks: bool = typer.Option(False, "--gt-tracks", help="--gt is another run's tracks.txt: every box in it "
                                       "is one to find (how far two runs agree)."),
        rules: str = typer.Option("mot17", "--rules", help=RULES_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table: the scores (mota, "
                                     "idf1, idp, idr, hota, deta, assa, motp, recall, precision, detection_f1, the counts; "
                                     "null where undefined) and warnings; with a folder --gt: sequences (scores per "
                                     "sequence), combined and warnings."),
    ) -> None:
        """Score one camera's tracks: MOTA, IDF1, IDP, IDR, HOTA, box recall / precision / F1, ID switches.

        TrackEval with the MOT17 rules (or --rules mot20); boxes match at IoU 0.5.
        """
        from pipeline.metrics import check_comparable, evaluate_mot, read_mot_file, scores_table, tracks_as_ground_truth

        rules = _check_rules(rules)
        if gt.is_dir() and not gt_tracks:
            _eval_mot_folder(gt, pred, rules, as_json)
            return
        gt_rows = tracks_as_ground_truth(read_mot_file(gt, "pred")) if gt_tracks else read_mot_file(gt, "gt")
        pred_rows = read_mot_file(pred, "pred")
        warnings = check_comparable(gt, gt_rows, pred_rows, rules)
        for warning in warnings:
            typer.echo(warning, err=True)
        scores = evaluate_mot(gt_rows, pred_rows, rules=rules)
        if as_json:
            typer.echo(json.dumps(_with_warnings(scores.as_dict(), warnings)))
        else:
            typer.echo(scores_table({pred.stem: scores}))

    @app.command("eval-mtmc")
    def eval_mtmc(
        gt: Path = typer.Option(..., "--gt", help="Scene folder with gt/CAMERA.txt (global person ids)."),
        run: Path = typer.Option(..., "--run", help="Run folder of `crosscam track` with CAMERA/TRACKS_FILE."),
        tracks: str = typer.Option("tracks_global.txt", "--tracks", help="Tracks file name inside each camera folder."),
        rules: str = typer.Option("mot17", "--rules", help=RULES_HELP),
        as_json: bool = typer.Option(False, "--json", help="Print one JSON object instead of a table: mtmc_idf1, "
                                     "mtmc_idp, mtmc_idr, mtmc and cameras (each eval-mot's scores; null where "
                                     "undefined), warnings."),
    ) -> None:
        """Score cross-camera identities: MTMC IDF1/IDP/IDR over all cameras jointly, plus per-camera metrics.

        A global id counts as right only where it names the same person in every camera. In the MTMC row,
        IDF1/IDP/IDR are the cross-camera identity scores (its MOTA and ID switches also count a change of
        id between cameras). A camera with no tracks file in the run counts as having found nobody
        (warned on stderr), and each camera's files get eval-mot's warnings (tracks that stop early,
        another sequence's, no box overlapping any person).
        """
        from pipeline.metrics import check_comparable, evaluate_mtmc, read_mot_file, scores_table

        rules = _check_rules(rules)
        if not run.is_dir():
            raise CrosscamError(f"{run}: run folder not found; pass the --out folder of `crosscam track`")
        gt_files = _gt_files(gt)
        gt_rows = {camera: read_mot_file(path, "gt") for camera, path in gt_files.items()}
        pred_rows = {}
        if not any((run / camera / tracks).is_file() for camera in gt_files):
            others = sorted({p.parent.name for pattern in ("*/run.json", f"*/{tracks}") for p in run.glob(pattern)
                             if not p.parent.name.startswith(".")}, key=counting_order)  # the run's cameras, with the file or not
            if others and not set(others) & set(gt_files):
                raise CrosscamError(f"{run}: its cameras ({', '.join(others)}) are not the ground truth's "
                                    f"({', '.join(gt_files)}); track with --camera names as in {gt / 'gt'}")
            hint = (" (a run made with --no-identities has no global ids: score one camera with eval-mot, or "
                    f"associate it with `crosscam associate {run}`)" if tracks == "tracks_global.txt" else "")
            raise CrosscamError(f"{run}: no camera of {', '.join(gt_files)} has {tracks}{hint}; nothing to score")
        warnings: list[str] = []  # said once the scores stand (a run past the scene is an error instead)
        for camera in gt_files:
            path = run / camera / tracks
            if path.is_file():
                pred_rows[camera] = read_mot_file(path, "pred")
                if len(gt_rows[camera]) and (gt_rows[camera][:, 6] == 1).any():  # a camera nobody walks through has nothing to compare
                    warnings += [w.replace("warning: ", f"warning: camera {camera}: ", 1)
                                 for w in check_comparable(gt_files[camera], gt_rows[camera], pred_rows[camera], rules)]
            else:
                warnings.append(f"warning: {path} missing; camera {camera} scored as having no tracks")
        for extra in sorted((p.parent.name for p in run.glob(f"*/{tracks}") if p.parent.name not in gt_files), key=counting_order):
            warnings.append(f"warning: {run / extra} has no ground truth in {gt / 'gt'}; not scored")
        scores = evaluate_mtmc(gt_rows, pred_rows, _scene_lengths(gt), rules)
        for warning in warnings:
            typer.echo(warning, err=True)
        if as_json:
            typer.echo(json.dumps(_with_warnings(scores.as_dict(), warnings)))
        else:
            typer.echo(scores_table({**scores.cameras, "MTMC": scores.mtmc}))

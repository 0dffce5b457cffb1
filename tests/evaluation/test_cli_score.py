"""`studio score` takes the global options before or after its name, like every other command."""
from __future__ import annotations

from studio.cli import _parser

GLOBALS = ["--home", "H", "--base-model", "M", "--device", "cpu"]


def test_score_takes_the_global_options_on_either_side():
    for argv in (["score", "runs/x", *GLOBALS], [*GLOBALS, "score", "runs/x"]):
        args = _parser().parse_args(argv)
        assert (args.home, args.base_model, args.device, str(args.run_dir)) == ("H", "M", "cpu", "runs/x")


def test_score_and_train_name_the_scorer_models_and_train_can_keep_the_last_step():
    args = _parser().parse_args(["score", "r", "--json", "--checkpoint", "step-000200", "--scorer-model", "d",
                                 "--scorer-model", "c"])
    assert args.json and args.checkpoint == "step-000200" and args.scorer_model == ["d", "c"]
    train = _parser().parse_args(["train", "--output", "o", "--keep", "last", "--scorer-model", "d"])
    assert train.keep == "last" and train.scorer_model == ["d"]
    assert _parser().parse_args(["train", "--output", "o"]).keep == "pick"

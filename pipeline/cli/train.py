"""`vilactl train`: the command-line face of pipeline/jobs/train.py."""
from __future__ import annotations

import os
from pathlib import Path

import typer

from vilactl.pipeline.cli.choices import Stage
from vilactl.pipeline.cli.context import COUNT, NON_NEGATIVE


def train(
    stage: Stage = typer.Option(..., help="projector (stage 0), pretrain (1) or sft (2)."),
    config: str | None = typer.Option(None, help="YAML config, or a bundled name: debug "
                                                 "(default), vila-7b, vila-13b."),
    blend: str | None = typer.Option(None, help="Blend (catalog dataset) to train on; default "
                                                "from the config's stage."),
    steps: int | None = typer.Option(None, callback=COUNT,
                                     help="Optimizer steps (default: from the config)."),
    lora: int | None = typer.Option(None, callback=NON_NEGATIVE,
                                    help="LoRA rank for the LLM, 0 = full weights "
                                         "(default: the config's stage lora, 0 in the bundled "
                                         "configs)."),
    init: str | None = typer.Option(None, help="Catalog checkpoint to start from (default: "
                                               "the previous stage's newest one of this "
                                               "model shape)."),
    name: str | None = typer.Option(None, help="Run name: checkpoints/<name>/ and catalog ids "
                                               "<name>@<step> (default: the stage)."),
    resume: bool = typer.Option(False, "--resume", help="Continue from the newest checkpoint "
                                                        "of this run, exactly."),
    parents: bool = typer.Option(False, "--parents", help="Stages run in order (projector → "
                                                          "pretrain → sft): first train the "
                                                          "earlier ones the catalog has no "
                                                          "checkpoint of this model shape of "
                                                          "(what `make pretrain` does)."),
    set_: list[str] = typer.Option(
        [], "--set", metavar="KEY=VALUE",
        help="Override one config value, repeatable: KEY is its dotted path in the YAML "
             "(stages.sft.lr=1e-5, train.warmup_ratio=0.1, data.max_length=1024), VALUE is read "
             "as YAML; checked like the file. Recorded with the run; --resume uses the --set "
             "values given with it (the same ones resume exactly; a changed batch layout is "
             "refused)."),
    replace: bool = typer.Option(False, "--replace", help="Train a run name again whose "
                                                          "checkpoints exist (refused while a "
                                                          "later stage, an eval or an export "
                                                          "was made from them)."),
) -> None:
    """Train one stage of the VILA recipe (also under `torchrun --nproc_per_node N -m
    vilactl.pipeline.cli train …`). Freeze policy and trainable parameters are printed; loss,
    tokens/s and padding go to metrics.jsonl and TensorBoard next to the checkpoints."""
    from vilactl.pipeline.cli.context import console, state
    from vilactl.pipeline.jobs.train import TrainRequest
    from vilactl.pipeline.jobs.train import train as run

    req = TrainRequest(stage=stage.value, config=config, blend=blend, steps=steps, lora=lora,
                       init=init, name=name, resume=resume, parents=parents,
                       replace=replace, overrides=tuple(set_))
    from vilactl.train.distributed import teardown

    try:
        s = run(Path(state.workspace), req, console)
    finally:
        teardown()                     # torchrun: leave the process group cleanly
    if "final_loss" in s and os.environ.get("RANK", "0") == "0":   # once under torchrun
        console.print(f"trained {stage.value}: mean loss of the first 10% of steps "
                      f"{s['first_loss']:.4f} → of the last 10% {s['final_loss']:.4f} "
                      f"({s['loss_drop']:.0%} lower), {s['tokens_per_s']:,.0f} tok/s, "
                      f"padding {s['padding_share']:.1%}", highlight=False)

"""What `harmowam reproduce` and `harmowam demo` share: the pipeline's phases (`harmowam_core.pipeline`) done by
the commands' own functions, each with its progress bars, a header per phase and the closing summary."""

from __future__ import annotations

from pathlib import Path

from rich.rule import Rule
from rich.table import Table

from harmowam_cli._bundle import policy_options
from harmowam_cli._common import console, quiet_libraries
from harmowam_core.errors import HarmoWAMError
from harmowam_core.pipeline import PHASES, Phase, PipelinePlan, PipelineState, pipeline_phases, run_phases


class CommandRunners:
    """`harmowam_core.pipeline.Runners` through each command's `run_*` function (looked up when called)."""

    def collect(self, task: str, episodes: int, data: Path, overrides: list[str], workers: int | None):
        from harmowam_cli import collect

        return collect.run_collect(task, episodes, "none", data, None, "scripted", False, overrides, workers=workers)

    def label(self, data: Path, task: str, overrides: list[str]):
        from harmowam_cli import label

        return label.run_label(data, None, task, overrides, False)

    def train_wm(self, task: str, data: Path, out: Path, resume: bool, max_steps: int | None, overrides: list[str]):
        from harmowam_cli import train_wm

        return train_wm.run_train_wm(task, data, out, resume, max_steps, overrides)

    def train_experts(
        self, task: str, data: Path, wm: Path, out: Path, resume: bool, max_steps: int | None, overrides: list[str]
    ):
        from harmowam_cli import train_experts

        return train_experts.run_train_experts(task, data, wm, out, resume, max_steps, True, overrides)

    def export(self, runs: Path, bundles: Path, name: str | None) -> Path:
        from harmowam_cli import export

        return export.run_export(runs, bundles, name)

    def eval(self, bundle: Path, plan: PipelinePlan, out: Path):
        from harmowam_cli import eval_cmd

        return eval_cmd.run_eval(
            bundle, ",".join(plan.protocols), plan.eval_episodes, plan.routers, True, plan.seed, plan.max_steps,
            policy_options(None, None, False), plan.videos, plan.bundles, out, workers=plan.workers,
        )  # fmt: skip

    def interaction(self, bundle: Path, plan: PipelinePlan, out: Path):
        """The appendix D.2 handover episodes (`phase_split`), with the evaluation's progress bars."""
        from harmowam_cli.eval_cmd import eval_progress
        from harmowam_core.evaluation.report import write_outputs
        from harmowam_core.evaluation.runner import EvalFailed
        from harmowam_core.phase_split import SPLIT_EXPERTS, evaluate_interaction
        from harmowam_core.policy.bundle import bundle_recipe
        from harmowam_core.workers import bundle_bytes, check_workers

        quiet_libraries()
        experts = list(SPLIT_EXPERTS)
        jobs = len(experts) * len(plan.protocols) * plan.eval_episodes
        workers = check_workers(plan.workers, jobs, True, bundle_bytes(bundle))
        console.print(
            f"interaction episodes of [bold]{bundle}[/]: {', '.join(experts)} × {', '.join(plan.protocols)} × "
            f"{plan.eval_episodes} episodes, {workers} worker{'s' if workers > 1 else ''}, into [bold]{out}[/]"
        )
        steps = bundle_recipe(bundle).step_limit(plan.max_steps)
        with eval_progress(jobs, steps, workers) as (on_episode, on_step):
            try:
                report = evaluate_interaction(
                    bundle, plan.protocols, experts, plan.eval_episodes, plan.seed, out, max_steps=plan.max_steps,
                    videos=plan.videos, on_episode=on_episode, on_step=on_step, workers=workers,
                )  # fmt: skip
            except EvalFailed as err:
                err.report.interrupted = True
                paths = write_outputs(err.report, out)
                raise HarmoWAMError(
                    f"{err}; the {len(err.report.results)} finished episode(s) are in {paths['json']}"
                ) from None
        write_outputs(report, out)
        if report.interrupted:
            raise KeyboardInterrupt
        return report

    def note(self, message: str) -> None:
        console.print(message)


def run_pipeline(
    plan: PipelinePlan, state: PipelineState, restart_from: str | None = None, on_begin=None, on_done=None
):
    """Every phase of `plan` in order (finished ones skipped), each under a header; returns the results.
    `on_begin` is called once the settings are checked, before the first phase."""
    phases = pipeline_phases(plan, CommandRunners())

    def on_start(phase: Phase, index: int, total: int, resumed: bool) -> None:
        again = " · [yellow]continuing where it stopped[/]" if resumed else ""
        console.print(Rule(f"[bold]{index + 1}/{total} {phase.name}[/] · {phase.detail}{again}"))

    def on_skip(phase: Phase, index: int, total: int, record: dict) -> None:
        console.print(
            f"[dim]{index + 1}/{total} {phase.name}: finished before ({minutes(record.get('seconds', 0.0))}), "
            "skipped[/]"
        )

    return run_phases(
        phases, state, restart_from=restart_from, on_begin=on_begin, on_start=on_start, on_skip=on_skip, on_done=on_done
    )


def minutes(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def phase_table(title: str, state: PipelineState, results: dict[str, str]) -> Table:
    """phase | time | result, for the closing summary."""
    table = Table(title=title)
    table.add_column("phase")
    table.add_column("time", justify="right")
    table.add_column("result")
    for name, record in sorted(state.phases.items(), key=lambda item: PHASES.index(item[0])):
        table.add_row(name, minutes(record.get("seconds", 0.0)), results.get(name, ""))
    return table

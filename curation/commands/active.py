"""Active-learning commands: `sample` (one round on the store), `simulate` (pick a strategy on a labeled file),
`encode` (fill the embedding cache ahead of time, e.g. nightly)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, err_console, make_context, progress

__all__ = ["register"]

ModelOpt = Annotated[
    str | None,
    typer.Option("--model", help="Encoder: a local folder or a cached hub id (default: packaged all-MiniLM-L6-v2)."),
]
DeviceOpt = Annotated[str | None, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
ModeOpt = Annotated[
    str | None, typer.Option("--mode", help="fast (a head on cached embeddings) or finetune (full BERT fine-tuning).")
]


def register(app: typer.Typer) -> None:
    @app.command("sample")
    def sample_cmd(
        strategy: Annotated[str | None, typer.Option("--strategy", help="Strategy name (an unknown name lists "
                                                                        "the valid ones).")] = None,
        n: Annotated[int | None, typer.Option("--n", min=1, help="How many documents to select.")] = None,
        domain: Annotated[str | None, typer.Option("--domain", help="customer_service or financial.")] = None,
        push: Annotated[bool, typer.Option("--push", help="Send the selection to Label Studio in priority "
                                                          "order.")] = False,
        project: Annotated[str | None, typer.Option("--project", help="Label Studio project for --push.")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        mode: ModeOpt = None,
        model: ModelOpt = None,
        device: DeviceOpt = None,
        include_pending: Annotated[bool, typer.Option(
            "--include-pending", help="Also consider documents selected or pushed before, still unlabeled.")] = False,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Train on the current labels, score the unlabeled pool, select N and record why (optionally push)."""
        from pipelines.sample import sample

        ctx = make_context(db, config)
        with progress(enabled=not as_json, transient=True) as prog:
            bar = prog.add_task("encoding", total=None)
            result = sample(
                ctx.store, config=ctx.config, strategy=strategy, n=n, domain=domain, seed=seed, mode=mode,
                model=model, device=device, include_pending=include_pending, push=push, push_project=project,
                on_status=lambda m: prog.update(bar, description=m),
                on_encoded=lambda k: prog.advance(bar, k),
            )

        def render() -> None:
            if result["note"]:
                err_console.print(f"[yellow]note:[/] {result['note']}")
            console.print(
                f"round {result['round']} in {result['domain']}: selected {result['selected']} of {result['pool']} "
                f"unlabeled ({result['labeled']} labeled, {result['pending_excluded']} pending excluded) with "
                f"{result['strategy_used']}; model {result['model_version'] or '-'}; {result['seconds']} s"
            )
            t = Table()
            for c in ("rank", "document", "score", "prediction", "text"):
                t.add_column(c, overflow="fold", max_width=70 if c == "text" else None)
            for s in result["selections"][:20]:
                pred = f"{s['predicted_label']} ({s['confidence']:.2f})" if "predicted_label" in s else ""
                t.add_row(str(s["rank"]), str(s["document_id"]), f"{s['score']:.4f}", pred, s["text"][:200])
            console.print(t)
            if len(result["selections"]) > 20:
                console.print(f"... and {len(result['selections']) - 20} more (--json lists all)")
            if result.get("push"):
                p = result["push"]
                console.print(f"pushed {p['pushed']} tasks to {p['project']} (id {p['project_id']}); "
                              f"{p['with_predictions']} with pre-annotations")

        emit(result, as_json=as_json, render=render)

    @app.command("simulate")
    def simulate_cmd(
        train: Annotated[Path, typer.Option("--train", help="Labeled training file (csv, tsv, jsonl, parquet).")],
        test: Annotated[Path, typer.Option("--test", help="Labeled test file.")],
        text_column: Annotated[str, typer.Option("--text-column")] = "text",
        label_column: Annotated[str, typer.Option("--label-column")] = "label",
        strategies: Annotated[str, typer.Option("--strategies", help="Comma-separated names.")] = "random,margin",
        initial: Annotated[int, typer.Option("--initial", min=1, help="Random labels to start from.")] = 100,
        batch: Annotated[int, typer.Option("--batch", min=1, help="Labels added per round.")] = 100,
        rounds: Annotated[int, typer.Option("--rounds", min=0)] = 5,
        seeds: Annotated[int, typer.Option("--seeds", min=1, help="Repetitions (mean and sd).")] = 1,
        plot: Annotated[Path | None, typer.Option("--plot", help="Write learning curves to this PNG.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Also write the result JSON here.")] = None,
        mode: ModeOpt = None,
        model: ModelOpt = None,
        device: DeviceOpt = None,
        cache_dir: Annotated[Path | None, typer.Option("--cache-dir", help="Embedding cache folder.")] = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Active learning with the file's labels as the oracle: accuracy and macro-F1 per round per strategy."""
        from curation.simulate import dump, plot_curves, simulate

        ctx = make_context(db, config)
        al = ctx.config.active_learning
        with progress(enabled=not as_json, transient=True) as prog:
            bar = prog.add_task("simulating", total=None)
            result = simulate(
                train, test, text_column=text_column, label_column=label_column,
                strategies=[s for s in strategies.split(",") if s.strip()], initial=initial, batch=batch,
                rounds=rounds, seeds=seeds, mode=mode or al.mode, head=al.head, model=model or al.model,
                device=device or al.device, cache_dir=cache_dir or al.embeddings_dir, min_labels=1,
                mc_samples=al.mc_samples, on_progress=lambda m: prog.update(bar, description=m),
            )
        if plot:
            result["plot"] = str(plot_curves(result, plot))
        if out:
            result["out"] = str(dump(result, out))

        def render() -> None:
            t = Table(title=f"accuracy by labels ({result['settings']['seeds']} seeds, {result['encoder']['model']} "
                            f"on {result['device']})")
            t.add_column("strategy")
            labels = next(iter(result["strategies"].values()))["labels"]
            for n_lab in labels:
                t.add_column(str(n_lab), justify="right")
            t.add_column("labels to 95% of full", justify="right")
            for name, s in result["strategies"].items():
                reach = (result.get("labels_to_95pct_full") or {}).get(name)
                t.add_row(name, *[f"{a:.3f}" for a in s["accuracy_mean"]], "-" if reach is None else str(reach))
            console.print(t)
            if result["full_data"]:
                f = result["full_data"]
                console.print(f"all {f['labels']} labels: accuracy {f['accuracy']:.3f}, macro-F1 {f['macro_f1']:.3f}")
            if plot:
                console.print(f"learning curves: {result['plot']}")

        emit(result, as_json=as_json, render=render)

    @app.command("encode")
    def encode_cmd(
        domain: Annotated[str | None, typer.Option("--domain")] = None,
        model: ModelOpt = None,
        device: DeviceOpt = None,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Embed documents not yet in the embedding cache (so `sample` only trains and scores)."""
        from pipelines.sample import encode_documents

        ctx = make_context(db, config)
        with progress(enabled=not as_json) as prog:
            bar = prog.add_task("encoding", total=None)
            result: dict[str, Any] = encode_documents(ctx.store, config=ctx.config, domain=domain, model=model,
                                                      device=device, on_encoded=lambda k: prog.advance(bar, k))

        def render() -> None:
            rate = f" ({result['texts_per_s']} texts/s)" if result["texts_per_s"] else ""
            console.print(f"{result['documents']} documents: {result['encoded']} encoded{rate}, {result['cached']} "
                          f"already cached, on {result['device']} in {result['seconds']} s -> {result['cache']}")

        emit(result, as_json=as_json, render=render)

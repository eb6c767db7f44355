"""`curate audit`: find likely label errors (cleanlab), write them out, send the worst for review, and report how
many reviews confirmed an error."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from curation.commands.common import ConfigOpt, DbOpt, JsonOpt, console, emit, make_context, progress

__all__ = ["register"]


def _review_table(runs: list[dict[str, Any]], title: str) -> Table:
    t = Table("audit run", "issues", "sent", "pending", "confirmed", "rejected", "confirmed rate", title=title)
    for r in runs:
        rate = "n/a" if r["confirmed_rate"] is None else f"{r['confirmed_rate']:.0%}"
        t.add_row(str(r["run_id"]), str(r["issues"]), str(r["sent"]), str(r["pending"]), str(r["confirmed"]),
                  str(r["rejected"]), rate)
    return t


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit_cmd(
        domain: Annotated[str | None, typer.Option("--domain", help="customer_service or financial.")] = None,
        out: Annotated[Path | None, typer.Option("--out", help="Write every audited document (worst label "
                                                               "quality first) to this CSV.")] = None,
        push_review: Annotated[bool, typer.Option("--push-review", help="Send the worst suspected errors to the "
                                                                        "review project in Label Studio.")] = False,
        project: Annotated[str | None, typer.Option("--project", help="Review project title (default "
                                                                      "<labelstudio.project>-<domain>-review).")
                           ] = None,
        review_limit: Annotated[int, typer.Option("--review-limit", min=1, help="How many to send with "
                                                                                 "--push-review.")] = 100,
        folds: Annotated[int, typer.Option("--folds", min=2, help="Cross-validation folds.")] = 5,
        mode: Annotated[str, typer.Option("--mode", help="fast (cached embeddings) or finetune (slow).")] = "fast",
        classifier: Annotated[str, typer.Option("--classifier", help="Fast mode's model: lda (default, seconds "
                                                                     "at 100k) or logreg.")] = "lda",
        model: Annotated[str | None, typer.Option("--model", help="Encoder (default: the active-learning "
                                                                  "one).")] = None,
        device: Annotated[str | None, typer.Option("--device", help="auto, cpu, cuda or cuda:N.")] = None,
        seed: Annotated[int | None, typer.Option("--seed")] = None,
        status: Annotated[bool, typer.Option("--status", help="Only apply pulled review decisions and show each "
                                                              "audit's confirmed-error rate.")] = False,
        db: DbOpt = None,
        config: ConfigOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        """Flag likely label errors (cleanlab on cross-validated probabilities), near-duplicates with different
        labels and outliers; record them per document and run."""
        from curation.errors import ConfigError

        ctx = make_context(db, config)
        if project and not push_review and not status:
            raise ConfigError("--project names the review project of --push-review.", hint="add --push-review")
        if status:
            from pipelines.audit import audit_status

            st = audit_status(ctx.store, domain=domain)

            def render_status() -> None:
                console.print(f"applied {st['decisions_applied']} new review decisions")
                console.print(_review_table(st["runs"], "Review of suspected label errors"))
                if st["confirmed_rate"] is not None:
                    console.print(f"overall: {st['confirmed']} confirmed, {st['rejected']} rejected "
                                  f"({st['confirmed_rate']:.0%} of reviewed candidates were real errors)")

            emit(st, as_json=as_json, render=render_status)
            return

        from pipelines.audit import audit

        with progress(enabled=not as_json, transient=True) as prog:
            bar = prog.add_task("auditing", total=None)
            result = audit(ctx.store, config=ctx.config, domain=domain, out=out, push_review=push_review,
                           project=project, review_limit=review_limit, folds=folds, seed=seed, mode=mode,
                           classifier=classifier, model=model, device=device,
                           on_status=lambda m: prog.update(bar, description=m),
                           on_encoded=lambda k: prog.advance(bar, k))

        def render() -> None:
            console.print(
                f"audited {result['audited']} labeled documents in {result['domain']} (run {result['run_id']}, "
                f"{result['seconds']} s): [bold]{result['issues']}[/] suspected label errors; also "
                f"{result['near_duplicate_conflicts']} near-duplicates labeled unlike their group and "
                f"{result['outliers']} outliers to look at; estimated noise rate {result['estimated_noise_rate']:.1%}")
            if result["multi_annotated"]:
                console.print(f"{result['multi_annotated']} documents with several annotators: CROWDLAB consensus "
                              f"differs from the majority on {result['crowdlab_changed']}")
            t = Table("doc", "given", "suggested", "quality", "kind", "text", title="Worst suspected errors")
            for r in result["top"]:
                t.add_row(str(r["id"]), str(r["given_label"]), str(r["suggested_label"]),
                          f"{r['label_quality']:.3f}", str(r["kind"]), str(r["text"])[:80])
            console.print(t)
            if result["out"]:
                console.print(f"all audited documents, worst first: {result['out']}")
            if result.get("review_push"):
                p = result["review_push"]
                console.print(f"sent {p['pushed']} for review to {p['project']} ({p['pending']} now pending)")
            if result["review_history"]:
                console.print(_review_table(result["review_history"], "Earlier audits: review outcome"))

        emit(result, as_json=as_json, render=render)

"""The report's section on the synthetic corpora behind a study, from their generation manifests."""

from __future__ import annotations

from analysis.report.textfmt import Section, fmt


def corpora_section(rows: list[dict]) -> Section:
    section = Section("Synthetic corpora", [
        "From each corpus's generation manifest. *Passed*: share of outputs kept by the run's filters; "
        "*content words kept*: mean share of a source's content words (lower-cased alphabetic words, stop "
        "words left out) that appear in its output, over all outputs; *repetitive*: share that fails a Gopher "
        "repetition rule (Rae et al. 2021), of all outputs (before the filter) and of the documents kept (after)."])
    section.table(
        ["corpus", "recipe", "generator", "outputs", "passed", "mean output tokens", "content words kept",
         "repetitive: outputs / kept", "documents", "tokens", "dropped"],
        [[r["name"], str(r["recipe"]), str(r["generator"]), str(r["outputs"]), fmt(r["pass_rate"], 3),
          fmt(r["mean_output_tokens"], 4), fmt(r["source_word_recall"], 3),
          f"{fmt(r.get('degenerate_share'), 3)} / {fmt(r.get('degenerate_share_kept'), 3)}", str(r["documents"]),
          str(r["document_tokens"]), ", ".join(f"{k} {v}" for k, v in r["dropped"].items()) or "none"]
         for r in rows])
    by_recipe: dict[str, list[dict]] = {}
    for row in rows:
        by_recipe.setdefault(str(row["recipe"]), []).append(row)
    for recipe, same in by_recipe.items():
        if len(same) > 1 and all(r["source_word_recall"] is not None for r in same):
            ranked = sorted(same, key=lambda r: -r["source_word_recall"])
            section.text(f"Recipe `{recipe}` from {len(same)} generators: "
                         + "; ".join(f"{r['generator']} keeps {r['source_word_recall']:.1%} of its sources' "
                                     f"content words" for r in ranked) + ".")
    return section

"""The report's unigram section: a table per training set, the tokens frequent in test but rare in
training as text (with their ids), and one figure (Zipf on the left, KL and coverage on the right)."""

from __future__ import annotations

import numpy as np
from matplotlib import pyplot as plt
from matplotlib.ticker import FormatStrFormatter, NullFormatter

from analysis.data.unigram import UnigramResult
from analysis.report.figures import colors, render
from analysis.report.textfmt import Figure
from analysis.report.textfmt import Section, fmt

TOKENS_SHOWN = 8  # per training set in the report (fits.json has them all)


def token_text(entry: dict) -> str:
    """"' the' (248)": the token as text (Python quoting: spaces and escapes visible) and its id."""
    return (repr(entry["token"]) if entry.get("token") is not None else "?") + f" ({entry['token_id']})"


def unigram_section(result: UnigramResult) -> Section:
    d = result.to_dict()
    s = Section("Unigram diagnostics", [
        f"Test set `{d['test']['prefix']}`: {d['test']['tokens']} tokens in {d['test']['documents']} documents "
        f"(left out: {d['test']['excluded_ids'] or 'nothing'}). KL uses additive smoothing alpha = {result.smoothing:g} "
        f"of the training distribution over V = {result.vocab_size} token ids."])
    s.table(["training set", "tokens", "token coverage", "type coverage", "KL(test||train) nats", "Zipf s"],
            [[n, str(next(t["tokens"] for t in d["train"] if t["name"] == n)), fmt(v["token_coverage"]),
              fmt(v["type_coverage"]), fmt(v["kl_test_train_nats"]), fmt(d["zipf"][n].get("exponent"), 3)]
             for n, v in d["per_train"].items()])
    how = d.get("token_text") or {}
    decoded = (f"decoded with the tokenizer the manifests name ({how['tokenizer']})" if "why_not" not in how
               else f"shown as ids only: the tokenizer {how.get('tokenizer') or ''} {how['why_not']}")
    s.text(f"Tokens frequent in the test set but rare in each training set, by p_test / q_train (largest first; "
           f"the first {TOKENS_SHOWN}), as text {decoded}, with the id in brackets:")
    s.table(["training set", "tokens"],
            [[name, ", ".join(token_text(t) for t in v["frequent_in_test_rare_in_train"][:TOKENS_SHOWN]) or "none"]
             for name, v in d["per_train"].items()])
    s.figures.append(unigram_figure(result))
    return s


def unigram_figure(result: UnigramResult) -> Figure:
    sets = [result.test, *result.trains]
    names = list(result.per_train)
    fig, (ax, ax1, ax2) = plt.subplots(1, 3, figsize=(11.0, max(2.2, 0.25 * len(names) + 1.2)),
                                       gridspec_kw={"width_ratios": [1.3, 1, 1]})
    for color, counts in zip(colors(len(sets)), sets):
        c = counts.padded(result.vocab_size)
        freq = np.sort(c[c > 0])[::-1] / c.sum()
        ranks = np.arange(1, freq.size + 1)
        ax.loglog(ranks, freq, color=color, lw=1.0, label=counts.name)
        z = result.zipf[counts.name]
        if z.get("exponent") is not None:
            ax.loglog(ranks[: z["ranks_used"]], 10 ** z["log10_intercept"] * ranks[: z["ranks_used"]] ** -z["exponent"],
                      color=color, ls=":", lw=0.8)
    ax.xaxis.set_major_formatter(FormatStrFormatter("%g"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("rank", fontsize=7)
    ax.set_ylabel("relative frequency", fontsize=7)
    ax.legend(fontsize=6)
    kl = [result.per_train[n]["kl_test_train_nats"] for n in names]
    ax1.bar_label(ax1.barh(names, kl, color="steelblue"), fmt="%.3g", padding=2, fontsize=6)
    ax1.set_xlim(0, max(kl) * 1.25 if max(kl) > 0 else 1)
    ax1.set_xlabel("KL(test || train), nats", fontsize=7)
    cov = [result.per_train[n]["token_coverage"] for n in names]
    ax2.bar_label(ax2.barh(names, cov, color="seagreen"), fmt="%.3g", padding=2, fontsize=6)
    ax2.set_xlim(0, 1.2)
    ax2.set_xlabel("share of test tokens seen in train", fontsize=7)
    ax2.set_yticks([])
    for axis in (ax, ax1, ax2):
        axis.tick_params(labelsize=6.5)
    fig.tight_layout()
    return Figure("unigram", "Zipf rank-frequency, KL divergence and coverage", (
        "Left: token rank-frequency of the test set and each training set, counted from their .bin/.idx files; "
        "dotted: least-squares fit of log frequency on log rank over the ranks with non-zero counts. Middle: KL "
        f"divergence of the test unigram distribution from each training set's (training distribution smoothed "
        f"additively, alpha = {result.smoothing:g} over V = {result.vocab_size} token ids). Right: token coverage of "
        "the test set by each training set."), render(fig))

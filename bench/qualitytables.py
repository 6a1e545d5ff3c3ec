"""The tables bench/quality.py prints: every row, the spread over seeds, val beside test."""

from __future__ import annotations

import numpy as np

from frozenaug.trainer.assess.heldout import HELD_OUT

SEVERITIES = (1, 2, 3, 4, 5)
STRONG = (3, 4, 5)
FAMILIES = ("geometric", "blur", "compression", "colour", "noise", "occlusion")


def _num(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def table(results: dict[str, dict]) -> str:
    head = ("| row | epochs | build s | fit s | s/epoch | clean | macro-F1 | compound | "
            "compound F1 | dist 1-5 | strong 3-5 | held-out family 1-5 | held-out family in "
            "compound |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    lines = [head]
    held_out: dict[str, list[float]] = {}  # variant -> each held-out family's mean
    # variant -> (held-out family, its lofo row's compound-with-F accuracy)
    held_in_compound: dict[str, list[tuple[str, float]]] = {}
    main = next((r["scores"] for r in results.values() if r["group"] == "main"), {})
    # what a lofo row is compared with: the base row (its budget, trained on every family)
    base = next((r["scores"] for r in results.values() if r["group"] == "base"), main)
    for name, r in results.items():
        for key, s in r["scores"].items():
            d = s["dist"]
            fam = r.get("family")
            vals = list(d.values())
            strong = [v for k, v in d.items() if int(k.split("/")[1]) in STRONG]
            label = name if key == "plain" else f"{name} {key.removeprefix('plain')}"
            every = len(d) == len(SEVERITIES) * (1 if fam else len(FAMILIES))
            with_f = s.get("compound_with", {}).get(fam) if fam else None
            if fam:
                held_out.setdefault(key, []).append(float(np.mean(vals)))
                if with_f is not None:
                    held_in_compound.setdefault(key, []).append((fam, with_f))
            lines.append(
                f"| {label} | {r['epochs']} | {r['build_s']:.0f} | {r['fit_s']:.0f} | "
                f"{r['epoch_s']:.1f} | "
                f"{s['clean']:.4f} | {s['macro_f1']:.4f} | "
                f"{_num(s.get('compound'))} | {_num(s.get('compound_f1'))} | "
                f"{f'{np.mean(vals):.4f}' if every and not fam else ''} | "
                f"{'' if fam or not strong else f'{np.mean(strong):.4f}'} | "
                f"{f'{fam}: {np.mean(vals):.4f}' if fam else ''} | "
                f"{f'{fam}: {with_f:.4f}' if with_f is not None else ''} |")
    lines += [f"\nleave-one-family-out mean ({key}, {len(v)} families): {np.mean(v):.4f}"
              for key, v in held_out.items()]
    for key, pairs in held_in_compound.items():  # against the base row on the same images
        trained = [base[key]["compound_with"][f] for f, _ in pairs
                   if "compound_with" in base.get(key, {})]
        which = "base" if base is not main else "main"
        versus = (f"; the {which} row, trained on them, on the same images: "
                  f"{np.mean(trained):.4f}" if len(trained) == len(pairs) else "")
        lines.append(f"leave-one-family-out under composition ({key}, {len(pairs)} families, "
                     f"compound images that include the family): "
                     f"{np.mean([v for _, v in pairs]):.4f}{versus}")
    for key, s in main.items():  # families no training preset has, always held out
        if "compound_with" in s:
            lines.append(f"main row ({key}), compound images that include a family no preset "
                         "has: " + ", ".join(f"{f}* {s['compound_with'][f]:.4f}"
                                             for f in HELD_OUT if f in s["compound_with"]))
    return "\n".join(lines)


def spread(results: dict[str, dict]) -> str:
    """Mean and standard deviation (ddof=1) over the fit seeds of every row run with several."""
    by: dict[tuple[str, str], list[dict]] = {}
    for name, r in results.items():
        for key, s in r["scores"].items():
            by.setdefault((r.get("base", name), key), []).append({**s, "seed": r.get("seed", 0)})
    lines = ["\n| row | seeds | clean | macro-F1 | compound | compound F1 |",
             "|---|---|---|---|---|---|"]
    for (base, key), runs in by.items():
        if len(runs) < 2:
            continue
        cells = []
        for k in ("clean", "macro_f1", "compound", "compound_f1"):
            v = np.array([s[k] for s in runs if s.get(k) is not None], float)
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}")
        label = base if key == "plain" else f"{base} {key.removeprefix('plain')}"
        seeds = ",".join(str(s["seed"]) for s in runs)
        lines.append(f"| {label} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def val_table(results: dict[str, dict]) -> str:
    """The rows scored on val (the main row, the K study, the levers, the ensemble): val, where
    a choice is made, beside test, mean and standard deviation over the seeds; +tta where the
    row was scored with it."""
    by: dict[str, list[dict]] = {}
    for name, r in results.items():
        if "val" in r:
            by.setdefault(r.get("base", name), []).append(r)
    if not by:
        return ""
    cols = [("val", "plain", "clean"), ("val", "plain", "compound"),
            ("scores", "plain", "clean"), ("scores", "plain", "compound"),
            ("val", "plain+tta", "compound"), ("scores", "plain+tta", "compound")]
    lines = ["\n| row (val: choose; test: report) | seeds | val clean | val compound | "
             "test clean | test compound | val compound +tta | test compound +tta |",
             "|---|---|---|---|---|---|---|---|"]
    for base, runs in by.items():
        cells = []
        for where, key, k in cols:
            if not all(key in r[where] for r in runs):  # a row scored without the variant
                cells.append("")
                continue
            v = np.array([r[where][key][k] for r in runs], float)
            cells.append(f"{v.mean():.4f} ± {v.std(ddof=1):.4f}" if len(v) > 1
                         else f"{v[0]:.4f}")
        seeds = ",".join(str(r.get("seed", 0)) for r in runs)
        lines.append(f"| {base} | {seeds} | " + " | ".join(cells) + " |")
    return "\n".join(lines)

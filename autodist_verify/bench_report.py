"""The benchmark's outputs: a table of medians and ratios, a JSON file, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path

from autodist_verify.bench import Measurement


def _baseline(measurements: list[Measurement], variant: str, size: float) -> Measurement | None:
    return next((m for m in measurements if m.variant == variant and m.size_mib == size), None)


def rows(measurements: list[Measurement]) -> list[dict]:
    """One row per measurement, with ratios to TensorFlow and to the disk at the same size."""
    result = []
    for m in measurements:
        tf_ = _baseline(measurements, "tensorflow", m.size_mib)
        disk = _baseline(measurements, "disk", m.size_mib)
        peak_process, peak = max(m.peak_extra_mib.items(), key=lambda kv: kv[1], default=("-", 0.0))
        result.append({
            "size_mib": m.size_mib,
            "variant": m.variant,
            "save_mib_s": m.save_mib_s,
            "restore_mib_s": m.restore_mib_s,
            "save_vs_tensorflow": m.save_mib_s / tf_.save_mib_s if tf_ else None,
            "save_vs_disk": m.save_mib_s / disk.save_mib_s if disk else None,
            "restore_vs_tensorflow": m.restore_mib_s / tf_.restore_mib_s if tf_ else None,
            "peak_extra_mib": peak,
            "peak_process": peak_process,
        })
    return result


def table(measurements: list[Measurement]) -> str:
    """A Markdown table (medians of the rounds)."""
    header = ("| size MiB | variant | save MiB/s | restore MiB/s | save / TF | save / disk | "
              "restore / TF | peak extra MiB (process) |")
    lines = [header, "|" + "---|" * 8]

    def ratio(value: float | None) -> str:
        return "" if value is None else f"{value:.2f}"

    for row in rows(measurements):
        lines.append(
            f"| {row['size_mib']:.0f} | {row['variant']} | {row['save_mib_s']:.0f} | {row['restore_mib_s']:.0f} | "
            f"{ratio(row['save_vs_tensorflow'])} | {ratio(row['save_vs_disk'])} | "
            f"{ratio(row['restore_vs_tensorflow'])} | {row['peak_extra_mib']:.0f} ({row['peak_process']}) |"
        )
    return "\n".join(lines) + "\n"


def write_json(measurements: list[Measurement], path: Path, settings: dict) -> None:
    path.write_text(json.dumps({"settings": settings, "measurements": [m.to_dict() for m in measurements],
                                "rows": rows(measurements)}, indent=2) + "\n")


def plot(measurements: list[Measurement], path: Path) -> None:
    """Save and restore throughput against size, one line per variant."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (save_axes, restore_axes) = plt.subplots(1, 2, figsize=(13, 5), sharex=True)
    for variant in dict.fromkeys(m.variant for m in measurements):
        points = sorted((m.size_mib, m.save_mib_s, m.restore_mib_s) for m in measurements if m.variant == variant)
        style = "--" if variant in ("tensorflow", "disk") else "-"
        save_axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=variant)
        restore_axes.plot([p[0] for p in points], [p[2] for p in points], style, marker="o", label=variant)
    for axes, what in ((save_axes, "save"), (restore_axes, "restore")):
        axes.set_xscale("log", base=2)
        axes.set_xlabel("model size (MiB)")
        axes.set_ylabel(f"{what} throughput (MiB/s, median)")
        axes.set_title(what)
        axes.grid(True, alpha=0.3)
    save_axes.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)

"""The benchmark's outputs: a table of medians and ratios, a JSON file, a PNG plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from autodist_verify.bench import Measurement


def _baseline(measurements: list[Measurement], variant: str, size: float) -> Measurement | None:
    return next((m for m in measurements if m.variant == variant and m.size_mib == size), None)


def _native_variant(variant: str) -> str | None:
    """The native variant an ``ours`` variant is compared with: the same layout and
    ``sharded`` setting (none for durable saves, which the disk measures)."""
    if not variant.startswith("ours/") or variant.endswith("/durable"):
        return None
    return "native/" + variant.removeprefix("ours/")


def _ratios(m: Measurement, base: Measurement | None) -> tuple[float | None, float | None]:
    """``m``'s save and restore throughput over ``base``'s (None where one is missing)."""
    if base is None:
        return None, None
    restore = None if m.restore_mib_s is None or base.restore_mib_s is None else m.restore_mib_s / base.restore_mib_s
    return m.save_mib_s / base.save_mib_s, restore


def rows(measurements: list[Measurement]) -> list[dict[str, Any]]:
    """One row per measurement, with ratios at the same size to TensorFlow's single-device
    Saver, to the same layout built natively with TensorFlow (``ours`` rows) and to the
    disk written with fsync."""
    result = []
    for m in measurements:
        tf_ = _baseline(measurements, "tensorflow", m.size_mib)
        disk = _baseline(measurements, "disk", m.size_mib)
        native_variant = _native_variant(m.variant)
        native = _baseline(measurements, native_variant, m.size_mib) if native_variant else None
        peak_process, peak = max(m.peak_extra_mib.items(), key=lambda kv: kv[1], default=("-", 0.0))
        save_vs_tensorflow, restore_vs_tensorflow = _ratios(m, tf_)
        save_vs_native, restore_vs_native = _ratios(m, native)
        result.append({
            "size_mib": m.size_mib,
            "variant": m.variant,
            "save_mib_s": m.save_mib_s,
            "restore_mib_s": m.restore_mib_s,
            "save_vs_tensorflow": save_vs_tensorflow,
            "save_vs_native": save_vs_native,
            "save_vs_disk": _ratios(m, disk)[0],
            "restore_vs_tensorflow": restore_vs_tensorflow,
            "restore_vs_native": restore_vs_native,
            "peak_extra_mib": peak,
            "peak_process": peak_process,
        })
    return result


def table(measurements: list[Measurement]) -> str:
    """A Markdown table (medians of the rounds). "TF" is TensorFlow's Saver on one device,
    "native" the same layout built with TensorFlow alone, "disk" the bytes written with
    fsync; an empty cell is a ratio that does not apply."""
    header = ("| size MiB | variant | save MiB/s | restore MiB/s | save / TF | save / native | save / disk | "
              "restore / TF | restore / native | peak extra MiB (process) |")
    lines = [header, "|" + "---|" * 10]

    def number(value: float | None, digits: int) -> str:
        return "" if value is None else f"{value:.{digits}f}"

    for row in rows(measurements):
        lines.append(
            f"| {row['size_mib']:.0f} | {row['variant']} | {row['save_mib_s']:.0f} | "
            f"{number(row['restore_mib_s'], 0)} | {number(row['save_vs_tensorflow'], 2)} | "
            f"{number(row['save_vs_native'], 2)} | {number(row['save_vs_disk'], 2)} | "
            f"{number(row['restore_vs_tensorflow'], 2)} | {number(row['restore_vs_native'], 2)} | "
            f"{row['peak_extra_mib']:.0f} ({row['peak_process']}) |"
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
        style = "--" if variant in ("tensorflow", "disk") else ":" if variant.startswith("native/") else "-"
        save_axes.plot([p[0] for p in points], [p[1] for p in points], style, marker="o", label=variant)
        restored = [p for p in points if p[2] is not None]
        if restored:
            restore_axes.plot([p[0] for p in restored], [p[2] for p in restored], style, marker="o", label=variant)
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

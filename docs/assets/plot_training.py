"""Draw the loss and mask-AP curves of a training run (``OUT/metrics.jsonl``) into a PNG, with Pillow only.

Usage:
    python docs/assets/plot_training.py runs/shapes/metrics.jsonl docs/assets/training_curves.png
"""

from __future__ import annotations

import json
import sys

from PIL import Image, ImageDraw, ImageFont

WIDTH, HEIGHT, MARGIN = 1100, 440, 60
COLOURS = {"loss": (31, 119, 180), "loss_ce": (255, 127, 14), "loss_mask": (44, 160, 44), "loss_dice": (214, 39, 40),
           "loss_objectness": (148, 103, 189), "AP": (31, 119, 180), "AP50": (255, 127, 14), "AP75": (44, 160, 44)}


def _panel(draw, box, title, series, x_max, font):
    left, top, right, bottom = box
    draw.rectangle(box, outline=(0, 0, 0))
    draw.text((left, top - 22), title, fill=(0, 0, 0), font=font)
    y_max = max((max(v for _, v in points) for points in series.values() if points), default=1.0) * 1.05 or 1.0
    for i in range(5):  # horizontal grid with labels
        y = bottom - (bottom - top) * i / 4
        draw.line((left, y, right, y), fill=(225, 225, 225))
        draw.text((left - 50, y - 7), f"{y_max * i / 4:.2f}", fill=(80, 80, 80), font=font)
    for i in range(5):
        x = left + (right - left) * i / 4
        draw.text((x - 10, bottom + 6), f"{int(x_max * i / 4)}", fill=(80, 80, 80), font=font)
    draw.text(((left + right) // 2 - 25, bottom + 24), "iteration", fill=(0, 0, 0), font=font)
    legend_y = top + 8
    for name, points in series.items():
        if not points:
            continue
        xy = [(left + (right - left) * s / x_max, bottom - (bottom - top) * v / y_max) for s, v in points]
        colour = COLOURS.get(name, (0, 0, 0))
        if len(xy) > 1:
            draw.line(xy, fill=colour, width=2)
        for x, y in xy if len(xy) < 40 else []:
            draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=colour)
        draw.line((right - 150, legend_y + 7, right - 125, legend_y + 7), fill=colour, width=3)
        draw.text((right - 118, legend_y), name, fill=(0, 0, 0), font=font)
        legend_y += 18


def main(metrics_path: str, out_path: str) -> None:
    records = [json.loads(line) for line in open(metrics_path, encoding="utf-8") if line.strip()]
    train = [r for r in records if r["type"] == "train"]
    evals = [r for r in records if r["type"] == "eval"]
    x_max = max(r["step"] for r in records)
    image = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default()
    losses = {k: [(r["step"], r[k]) for r in train] for k in ("loss", "loss_ce", "loss_mask", "loss_dice",
                                                               "loss_objectness")}  # fmt: skip
    aps = {k: [(r["step"], r[k]) for r in evals if r[k] is not None] for k in ("AP", "AP50", "AP75")}
    half = WIDTH // 2
    _panel(draw, (MARGIN, MARGIN, half - 20, HEIGHT - MARGIN), "training losses (weighted)", losses, x_max, font)
    _panel(draw, (half + MARGIN, MARGIN, WIDTH - 20, HEIGHT - MARGIN), "validation mask AP (%)", aps, x_max, font)
    image.save(out_path)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

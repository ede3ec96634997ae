"""Image grids and heat maps as PNG files (no torchvision, no matplotlib)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from pixdiff.runtime.atomic import atomic_write


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """(N, C, H, W) in [-1, 1] -> uint8 (N, H, W, C), rounded as the ADM evaluator's samplers do."""
    x = ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)  # (N, C, H, W)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def make_grid(images: np.ndarray, nrow: int | None = None, pad: int = 2) -> np.ndarray:
    """uint8 (N, H, W, C) -> one uint8 (rows*(H+pad)+pad, cols*(W+pad)+pad, C) image on white."""
    n, h, w, c = images.shape
    cols = nrow or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), 255, dtype=np.uint8)
    for i, img in enumerate(images):
        r, col = divmod(i, cols)
        grid[pad + r * (h + pad): pad + r * (h + pad) + h, pad + col * (w + pad): pad + col * (w + pad) + w] = img
    return grid


def save_png(image: np.ndarray, path: str | Path, scale: int = 1) -> Path:
    """Write atomically; `scale` enlarges with nearest-neighbour so small samples stay readable."""
    pil = Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image)
    if scale > 1:
        pil = pil.resize((pil.width * scale, pil.height * scale), Image.NEAREST)
    with atomic_write(path) as f:
        pil.save(f, format="PNG")
    return Path(path)


def _enlarged(grid: np.ndarray, scale: int) -> Image.Image:
    """A uint8 (H, W, C) grid as a PIL image enlarged `scale` times (nearest neighbour), to label."""
    body = Image.fromarray(grid.squeeze(-1) if grid.shape[-1] == 1 else grid)
    return body.resize((body.width * scale, body.height * scale), Image.Resampling.NEAREST)


def save_grid(images: torch.Tensor | np.ndarray, path: str | Path, nrow: int | None = None,
              columns: Sequence[str] = ()) -> Path:
    """Samples as one PNG grid: (N, C, H, W) in [-1, 1] or uint8 (N, H, W, C); small images are
    enlarged to ~128 px a cell so that they stay readable. `columns`: a name over each column (the
    class of a balanced grid with one column per class)."""
    if isinstance(images, torch.Tensor):
        images = to_uint8(images)
    scale = max(1, 128 // images.shape[1])
    grid = make_grid(images, nrow=nrow)
    if not columns:
        return save_png(grid, path, scale=scale)
    from PIL import ImageDraw

    body, header = _enlarged(grid, scale), 16
    canvas = Image.new(body.mode, (body.width, body.height + header), "white")
    canvas.paste(body, (0, header))
    draw, cell = ImageDraw.Draw(canvas), (images.shape[2] + 2) * scale
    for k, name in enumerate(columns):
        draw.text((2 * scale + k * cell + 2, 2), name[: max(1, cell // 6)], fill="black")
    return save_png(np.asarray(canvas), path)


def save_class_grid(images: np.ndarray, labels: np.ndarray, path: str | Path, *, per_class: int = 8,
                    max_rows: int = 16, labelled: bool = True, names: tuple[str, ...] = ()) -> Path:
    """uint8 (N, H, W, C) samples as a grid with one row per class (the first `per_class` of each, up
    to `max_rows` classes), each row headed by its class name (`names[label]`, its first 16
    characters) or, without one, its number; unlabelled: a plain grid of 64."""
    if not labelled:
        return save_grid(images[:64], path)
    from PIL import ImageDraw

    rows = [(c, images[labels == c][:per_class]) for c in np.unique(labels)[:max_rows]]
    per_class = max(len(batch) for _, batch in rows)  # no empty columns when there are few images
    h, w, c = images.shape[1:]
    scale = max(1, 128 // h)
    cells = np.full((len(rows) * per_class, h, w, c), 255, np.uint8)
    for r, (_, batch) in enumerate(rows):
        cells[r * per_class: r * per_class + len(batch)] = batch
    body = _enlarged(make_grid(cells, nrow=per_class), scale)
    heads = {label: names[label][:16] if label < len(names) else f"c{label}" for label, _ in rows}
    margin = 8 + 6 * max(len(head) for head in heads.values())  # PIL's default font: ~6 px a character
    canvas = Image.new(body.mode, (body.width + margin, body.height), "white")
    canvas.paste(body, (margin, 0))
    draw = ImageDraw.Draw(canvas)
    for r, (label, _) in enumerate(rows):
        draw.text((4, (2 + r * (h + 2) + h // 2) * scale - 6), heads[label], fill="black")
    return save_png(np.asarray(canvas), path)


# low -> high along viridis (matplotlib's default map, 5 of its stops): a light cell is a high value
_RAMP = np.array([(68, 1, 84), (59, 82, 139), (33, 145, 140), (94, 201, 98), (253, 231, 37)], np.float64)


def _ramp(t: float) -> tuple[int, int, int]:
    """t in [0, 1] -> an RGB colour of _RAMP, linearly between its stops."""
    x = min(max(t, 0.0), 1.0) * (len(_RAMP) - 1)
    i = min(int(x), len(_RAMP) - 2)
    return tuple(int(round(c)) for c in _RAMP[i] + (x - i) * (_RAMP[i + 1] - _RAMP[i]))


def save_heatmap(values: list[list[float]], rows: list[str], cols: list[str], path: str | Path, *,
                 title: str = "", cell: tuple[int, int] = (84, 26)) -> Path:
    """A table of numbers (R rows x C columns; NaN: no value) as a PNG heat map: each cell coloured
    by its value between the table's min and max and labelled with it, rows and columns named."""
    from PIL import Image, ImageDraw

    v = np.asarray(values, np.float64).reshape(len(rows), len(cols))
    finite = v[np.isfinite(v)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    cw, ch = cell
    left, top = 8 + 6 * max(map(len, rows), default=0), 2 * ch
    canvas = Image.new("RGB", (left + cw * len(cols) + 8, top + ch * len(rows) + 8), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), title, fill="black")
    for j, name in enumerate(cols):
        draw.text((left + j * cw + 4, ch + 6), name, fill="black")
    for i, name in enumerate(rows):
        y = top + i * ch
        draw.text((4, y + 7), name, fill="black")
        for j in range(len(cols)):
            x, value = left + j * cw, v[i, j]
            t = (value - lo) / (hi - lo) if hi > lo else 0.0
            fill = _ramp(t) if math.isfinite(value) else (90, 90, 90)
            draw.rectangle((x, y, x + cw - 2, y + ch - 2), fill=fill)
            text = f"{value:.4g}" if math.isfinite(value) else "failed"
            draw.text((x + 6, y + 7), text, fill="black" if math.isfinite(value) and t > 0.6 else "white")
    return save_png(np.asarray(canvas), path)

"""Complete digits from their top halves with a trained iGPT, through the inference pipeline.

    from projects.igpt.pipeline import complete_digits
    complete_digits("output/igpt/model_final", "completions.png")   # 8 test digits

or `python -m projects.igpt.pipeline output/igpt/model_final completions.png --sample`.

`PixelCompletionPipeline` takes 28 x 28 uint8 digits, turns them into pixel tokens with the
run's own clusters (the config's test dataset names them), keeps the top `top_rows` rows as
the prompt and generates the rest (greedy by default; `do_sample=True`, `top_k`, `seed`
sample). It runs under any layout, like every `BasePipeline`.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import numpy as np
import torch

from libai.data.datasets import MNISTDataset
from libai.inference.basic import BasePipeline, PipelineError, reject_unknown
from libai.inference.generation import generate
from libai.utils import distributed as dist
from projects.igpt.data import default_clusters_file, load_or_fit_clusters, quantize, shrink_images


class PixelCompletionPipeline(BasePipeline):
    """Digits -> `{"prompt": tokens, "completion": tokens, "image": float [size, size]}` each.

    Parameters (constructor defaults, or per call): `top_rows` (rows kept as the prompt;
    default half the image), `do_sample`, `top_k`, `temperature`, `seed` (the sampling
    generator's seed).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        pixels = self.cfg.dataloader.test[0].dataset
        self.image_size, self.num_clusters = int(pixels.image_size), int(pixels.num_clusters)
        clusters_file = pixels.get("clusters_file") or default_clusters_file(pixels.get("root"), self.image_size, self.num_clusters)
        self.centres = load_or_fit_clusters(clusters_file, pixels.get("root"), self.image_size, self.num_clusters)

    def _parse_parameters(
        self,
        top_rows: Optional[int] = None,
        do_sample: bool = False,
        top_k: Optional[int] = None,
        temperature: float = 1.0,
        seed: int = 0,
        **unknown: Any,
    ) -> tuple[dict, dict, dict]:
        reject_unknown(type(self).__name__, unknown)
        return {"top_rows": top_rows}, dict(do_sample=do_sample, top_k=top_k, temperature=temperature, seed=seed), {}

    def preprocess(self, inputs: Any, top_rows: Optional[int]) -> dict:
        """Digits [n, 28, 28] (uint8) -> the start token and the top rows' pixel tokens."""
        top_rows = self.image_size // 2 if top_rows is None else top_rows
        if not 0 < top_rows < self.image_size:
            raise PipelineError(f"top_rows={top_rows} must be between 1 and {self.image_size - 1} (the image has {self.image_size} rows)")
        digits = np.asarray(inputs, dtype=np.uint8)
        single = digits.ndim == 2
        digits = digits[None] if single else digits
        if digits.ndim != 3:
            raise PipelineError(f"{type(self).__name__} takes a 28 x 28 digit or a stack of them, got shape {digits.shape}")
        tokens = torch.from_numpy(quantize(shrink_images(digits, self.image_size), self.centres).astype(np.int64))
        prompt = tokens.reshape(len(tokens), -1)[:, : top_rows * self.image_size]
        start = torch.full((len(tokens), 1), self.num_clusters, dtype=torch.long)
        return {"input_ids": torch.cat((start, prompt), dim=1), "single": single}

    def forward(self, model_inputs: dict, seed: int, **generate_kwargs: Any) -> dict:
        """Generate the remaining pixels of each digit."""
        input_ids = model_inputs["input_ids"]
        remaining = self.image_size**2 - (input_ids.shape[1] - 1)
        generator = torch.Generator(device=dist.get_device()).manual_seed(seed)
        ids = generate(
            self.model,
            input_ids.to(dist.get_device()),
            max_new_tokens=remaining,
            generator=generator,
            forward=lambda inputs: self.model_forward(inputs, keys=("logits",)),
            **generate_kwargs,
        )
        return {"ids": ids.cpu(), "prompt_length": input_ids.shape[1] - 1, "single": model_inputs["single"]}

    def postprocess(self, model_outputs: dict) -> Any:
        """Each digit's prompt and completion tokens and its image (cluster intensities)."""
        pixels = model_outputs["ids"][:, 1:]
        size = self.image_size
        results = [
            {
                "prompt": row[: model_outputs["prompt_length"]].tolist(),
                "completion": row[model_outputs["prompt_length"] :].tolist(),
                "image": self.centres[row.numpy()].reshape(size, size),
            }
            for row in pixels
        ]
        return results[0] if model_outputs["single"] else results


def save_grid(rows: list[list[np.ndarray]], path: str, scale: int = 4, gap: int = 2) -> str:
    """Write images (float [h, w] in [0, 1]) as a grid, one list per row, to a grayscale PNG."""
    from PIL import Image

    height, width = rows[0][0].shape
    cols = max(len(row) for row in rows)
    canvas = np.full(((height + gap) * len(rows) + gap, (width + gap) * cols + gap), 0.5, dtype=np.float32)
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            top, left = gap + r * (height + gap), gap + c * (width + gap)
            canvas[top : top + height, left : left + width] = image
    picture = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8), mode="L")
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    tmp = f"{path}.tmp-{os.getpid()}.png"
    picture.save(tmp)
    os.replace(tmp, path)
    return path


def complete_digits(
    model_path: str,
    out_png: str,
    num_digits: int = 8,
    config_file: Optional[str] = None,
    **kwargs: Any,
) -> list:
    """Complete the bottom halves of `num_digits` test digits (evenly spaced over the split)
    from their top halves and draw `out_png`: the digits (as pixel tokens) in the first row,
    the prompts (bottom half grey) in the second, the completions in the third. `kwargs` go
    to the pipeline (layout, `do_sample`, `top_rows`, ...). Returns the pipeline's results."""
    layout = {k: kwargs.pop(k) for k in ("data_parallel", "tensor_parallel", "pipeline_parallel") if k in kwargs}
    pipeline = PixelCompletionPipeline(config_file, model_path=model_path, **layout)
    pixels = pipeline.cfg.dataloader.test[0].dataset
    test_digits = MNISTDataset(pixels.get("root"), train=False).images
    # Spread over the split (the shipped test digits are sorted by class).
    digits = test_digits[np.linspace(0, len(test_digits) - 1, num_digits).astype(int)]
    results = pipeline(digits, **kwargs)
    size = pipeline.image_size
    originals = [pipeline.centres[quantize(image, pipeline.centres)] for image in shrink_images(digits, size)]
    prompts = []
    for result in results:
        prompt = np.full(size * size, 0.5, dtype=np.float32)
        prompt[: len(result["prompt"])] = pipeline.centres[result["prompt"]]
        prompts.append(prompt.reshape(size, size))
    if dist.is_main_process():
        save_grid([originals, prompts, [r["image"] for r in results]], out_png)
    return results


def main(argv: Optional[list] = None) -> None:
    """`python -m projects.igpt.pipeline output/igpt/model_final completions.png [--sample]`."""
    import argparse

    parser = argparse.ArgumentParser(description="Complete test digits from their top halves into a PNG grid.")
    parser.add_argument("model_path", help="a checkpoint directory of an iGPT run, e.g. output/igpt/model_final")
    parser.add_argument("out_png", help="where to write the grid")
    parser.add_argument("--num-digits", type=int, default=10)
    parser.add_argument("--sample", action="store_true", help="sample (top-k 3) instead of greedy decoding")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    sampling = dict(do_sample=True, top_k=3) if args.sample else {}
    complete_digits(args.model_path, args.out_png, num_digits=args.num_digits, seed=args.seed, **sampling)
    print(args.out_png)


if __name__ == "__main__":
    main()

"""LiBai's import path for generation (`libai.inference.generator.generation_utils`); the
code lives in `libai.inference.generation`."""

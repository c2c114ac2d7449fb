"""The benchmarks behind ``python -m hipbmm_inductor bench``, on the GPU against the vendor GEMM in the
same run:

- :mod:`.gemm`: single GEMMs over shape suites, CUDA-graph and eager timings, roofline floors;
- :mod:`.block`: a compiled FP8 decoder block with and without the rewrite, per compile mode;
- :mod:`.inputs`: fresh random FP8 inputs, rotated past the cache;
- :mod:`.suites`: the weight shapes and token counts;
- :mod:`.plots`: their plots.

The command line is :mod:`hipbmm_inductor.cli.bench`; results and how to read them are in
docs/benchmarks.md.
"""

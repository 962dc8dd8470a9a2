"""Performance benchmarks of the owner agent and the verifier (issue #8): rerunnable, results in docs/results/perf*.

- ``gen_checkpoint``: a synthetic LLaMA checkpoint at the 1.1B or 7B shape (sharded bf16 safetensors, config,
  tokenizer), written one tensor at a time;
- ``owner_vs_reference``: ``pawprint owner invariants`` against a re-implementation of the published HuRef
  pipeline (whole model loaded with transformers in fp32), wall time and peak memory of each;
- ``floor``: read bandwidth and matmul throughput, the floor they set, the agent's time as a multiple of it,
  and a profile;
- ``commitment``: weight-commitment hashing against ``sha256sum``, and the cache that skips a second pass;
- ``transfer`` and ``registry_scale``: a default bundle over loopback TLS, and a 10,000-base registry screen;
- ``all_layers``: all-layer terms, and how cost grows with layers, probe tokens and width.

Every module runs with ``python -m benchmarks.perf.<name> --help``; ``_common`` holds the shared measuring
helpers. Generated checkpoints go under ``out/perf/`` (ignored by git). Nothing here is a test: timings are
reported, never asserted.
"""

"""What the tests share and are not tests themselves: inputs, stand-ins, fakes, and the workers
that tests run in a fresh process (by module name, ``python -m tests.support.<name>``, or by path).

Inputs and oracles
    :mod:`.inputs`: valid ``hipb_mm_fp8`` inputs built from a plain weight, the float64 oracle,
    the error bound and the check of a backend's output against both.
    :mod:`.zoo`: FP8 linears as third-party code writes them (imports no hipbmm_inductor; run as a
    script, the "package absent" side of the zoo test).
    :mod:`.tiny_fp8_llama`: a tiny random FP8_DYNAMIC Llama checkpoint for the vLLM tests.

Stand-ins and fakes
    :mod:`.aiter_standin`: a recording stand-in for AMD's ``aiter`` module.
    :mod:`.aiter_shared`: what the aiter backend's tests share (the simulated platform, the
    tolerance check, a spy for ``tuning.choose``).
    :mod:`.launch_fakes`: a recording stand-in for a compiled Triton kernel's C launcher.
    :mod:`.tuning_fakes`: a fake tunable backend (configs with costs, wrong and raising ones).
    :mod:`.faults`: real store faults (a full tmpfs, a read-only bind mount), skipped without root.
    :mod:`.vllm_env`: skip without vLLM, and start a helper module in a fresh process.

Workers (each in its own process)
    :mod:`.triton_interpret_worker`: the Triton backend under ``TRITON_INTERPRET=1``.
    :mod:`.interpret_bad_cache_worker`: the Triton backend, interpreted, over unusable cached configs.
    :mod:`.graph_cache_worker`: compiles under each lowering setting, for the FX graph cache test.
    :mod:`.mp_writer`, :mod:`.mp_clear`: tuning-store writers, a clearer and an importer.
    :mod:`.vllm_kernel_checks`: the vLLM kernel class and plugin inside a real vLLM.
    :mod:`.vllm_runner`: vLLM's engine on a checkpoint, reporting what the FP8 linears ran on.
"""

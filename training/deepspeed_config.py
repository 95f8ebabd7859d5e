"""DeepSpeed configuration for UTP pretraining, and the environment DeepSpeed needs on a CPU-only machine.

Mixed precision is torch autocast (bf16) around the loss, not DeepSpeed's ``bf16`` mode: the public FactoST-v2
code autocasts over fp32 weights, and the loop calls ``module.training_loss`` (not ``engine.forward``), which
DeepSpeed's own ``torch_autocast`` would not wrap. So the DeepSpeed config always holds fp32 weights and states.

On the CPU, ``deepspeed.init_distributed`` builds a shared-memory all-reduce extension (about 90 s of g++ on
2 cores) that only DeepSpeed's *inference* all-reduce uses; training collectives go through torch.distributed
(gloo). ``prepare_deepspeed_environment`` marks that op incompatible for this process so nothing compiles, and
points ``TORCH_EXTENSIONS_DIR`` at the project's ignored ``.cache/`` so any op that is compiled is built once.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from training.config import PretrainConfig

PROJECT_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_EXTENSIONS_DIR = PROJECT_ROOT / ".cache" / "torch_extensions"
SHM_COMM_OP = "deepspeed_shm_comm"
# DeepSpeed prints a throughput line every `steps_per_print` steps; the loop logs its own metrics.
NO_DEEPSPEED_PRINTS = 10**9
# ZeRO communication buckets (elements): DeepSpeed's default is 5e8, sized for billion-parameter models; a few
# million keep memory small for the 2.5-30 M parameter backbones while still overlapping communication.
ZERO_BUCKET_ELEMENTS = 20_000_000


def build_ds_config(cfg: PretrainConfig, world_size: int) -> dict[str, Any]:
    """The ``config`` dict for ``deepspeed.initialize``: global batch split evenly, ZeRO stage, clipping."""
    if world_size < 1 or cfg.batch_size % world_size:
        raise ValueError(f"batch_size={cfg.batch_size} cannot be split evenly over world_size={world_size}")
    zero: dict[str, Any] = {"stage": cfg.zero_stage}
    if cfg.zero_stage > 0:
        zero.update(
            reduce_bucket_size=ZERO_BUCKET_ELEMENTS,
            allgather_bucket_size=ZERO_BUCKET_ELEMENTS,
            overlap_comm=cfg.use_gpu,
            contiguous_gradients=True,
        )
    return {
        "train_batch_size": cfg.batch_size,
        "train_micro_batch_size_per_gpu": cfg.batch_size // world_size,
        "gradient_accumulation_steps": 1,
        "gradient_clipping": cfg.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,
        "fp16": {"enabled": False},
        "bf16": {"enabled": False},
        "steps_per_print": NO_DEEPSPEED_PRINTS,
        "wall_clock_breakdown": False,
    }


def deepspeed_env_vars(use_gpu: bool, extensions_dir: str | os.PathLike[str] | None = None) -> dict[str, str]:
    """Environment for processes that run DeepSpeed: the extension cache, and the CPU accelerator off-GPU."""
    env = {"TORCH_EXTENSIONS_DIR": str(extensions_dir or os.environ.get("TORCH_EXTENSIONS_DIR") or
                                      DEFAULT_EXTENSIONS_DIR)}
    if not use_gpu:
        env["DS_ACCELERATOR"] = "cpu"
    return env


def prepare_deepspeed_environment(use_gpu: bool) -> None:
    """Call before ``deepspeed.initialize`` in every worker: sets the env and, on CPU, skips the shm op build."""
    for key, value in deepspeed_env_vars(use_gpu).items():
        os.environ.setdefault(key, value)
    Path(os.environ["TORCH_EXTENSIONS_DIR"]).mkdir(parents=True, exist_ok=True)
    if not use_gpu:
        disable_cpu_shm_comm()


def disable_cpu_shm_comm() -> None:
    """Mark DeepSpeed's CPU shared-memory comm op incompatible in this process, so it is never compiled.

    ``deepspeed.comm.torch.build_shm_op`` consults ``deepspeed.ops.__compatible_ops__`` (a dict cached in the
    module on first access) and returns None for an incompatible op; training all-reduces then use gloo.
    """
    import deepspeed.ops

    deepspeed.ops.__compatible_ops__[SHM_COMM_OP] = False

"""``taa trajectories``: an offline dataset of mixed quality, generated from a gymnasium environment."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Optional

from taa import config as cfg
from taa.api._common import PathLike


def trajectories(env: str, *, out: PathLike, episodes: int = 1000, mixture: Optional[Mapping[str, float]] = None,
                 noise: Sequence[float] = (0.3, 0.7), sigma: float = 0.3, seed: int = 0,
                 solved: Optional[float] = None, overwrite: bool = False) -> dict[str, Any]:
    """Generate ``episodes`` episodes of ``env`` from the policy kinds in ``mixture`` (default:
    the offline_rl task's: 20% random, 15% noisy, 50% medium, 15% expert) and write them to ``out`` in
    taa's ``.npz`` layout (:mod:`taa.data.trajectories`). Returns the data's summary:
    episodes, steps, the spread of returns, the episodes of each kind (and the share at or
    above ``solved``). An existing ``out`` is kept unless ``overwrite``."""
    out = Path(out)
    if out.suffix != ".npz":
        raise cfg.ConfigError(f"--out {out}: a trajectories file ends in .npz")
    if out.exists() and not overwrite:
        raise cfg.ConfigError(f"--out {out} exists: give --overwrite to replace it")
    defaults = cfg.OfflineRLTaskConfig()
    settings = cfg.OfflineRLTaskConfig(env=env, episodes=episodes, mixture=dict(mixture or defaults.mixture),
                                       noise=list(noise), sigma=sigma, data_seed=seed)
    from taa.data.trajectories import save_npz
    from taa.rl.episodes import generate

    data = generate(settings.env, settings.episodes, settings.mixture, settings.data_seed, tuple(settings.noise),
                    settings.sigma)
    save_npz(data, out)
    return {**data.summary(solved), "out": str(out)}

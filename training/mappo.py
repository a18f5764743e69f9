"""MAPPO for the three tactical agents, with the centralized critic, in the style of CleanRL's ppo.py.

One update, top to bottom:
1. collect: `num_envs` trajectories of `episode_length` steps from the vectorized environment; each
   agent samples its own action, the critic values the 420-dim state;
2. GAE (gamma, lambda) on the team reward with the critic's denormalized values, bootstrapped
   with the value of the window after the last step when an episode is truncated;
3. value normalization: returns update a running mean/std, the critic regresses onto
   standardized returns;
4. `epochs` passes over shuffled minibatches (or minibatches drawn with probability
   proportional to |advantage|^alpha, importance-weighted by (N * P)^-beta / max, the weights
   multiplying the policy and value losses); per agent a clipped surrogate on the normalized
   advantage and an entropy bonus whose coefficient decays linearly start -> end, reaching the
   end at update max(training.updates, the last update of this train() call), counted over the
   model's life; a later call goes on from the coefficient where the last one stopped, so it
   never jumps back up (repeated short calls and resumed runs follow one schedule; see train());
   a clipped value loss for the critic (clipped around its collected values, re-expressed under the
   statistics just updated, like the targets); each actor's own value head regresses onto the same
   standardized returns (an auxiliary loss, so the value an agent serves means something);
   gradients averaged over ranks, clipped per network, one Adam step;
5. stats: episode reward, losses, entropy, approx KL, clip fraction, explained variance, gradient
   norms per network, the value normalizer's mean and std, steps/s.

"Trajectories" are the experience of one update; "rollout" in this project means only a deployment
of a model version (tactical_engine/rollout.py).

Random streams (episode starts, action sampling, minibatch order, critic dropout) are seeded
before every update from (seed, rank, update number): two runs with one seed are identical, each
rank plays its own episodes, and a run resumed from a checkpoint goes on exactly as an
uninterrupted one would.

Dropout: the actors run in eval mode while collecting and updating, so the probability ratio compares
exactly the network that acted (and that is served); dropout regularizes the critic.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from market.bars import Bars
from tactical.actions import actions_from_indices
from tactical.config import AGENT_NAMES, Config, as_config
from tactical.progress import progress_bar
from training import checkpoint as checkpoints
from training.distributed import DistContext
from training.env import VectorTradingEnv
from training.evaluation import PolicyScore, Validation, evaluate_holdout, validate
from training.metrics_log import MetricsLog
from training.series import HOLDOUT, TradingSeries
from training.system import TacticalMARLSystem
from training.value_norm import ValueNormalizer

ADAM_EPS = 1e-5


def priority_sampling(advantages: torch.Tensor, alpha: float, beta: float) -> tuple[np.ndarray, torch.Tensor]:
    """Sampling probabilities P(i) = p_i / sum p, p_i = |A_i|^alpha, and importance weights (N P(i))^-beta / max.

    The weights undo the bias of sampling high-advantage steps more often (fully at beta = 1);
    dividing by the largest keeps every weight <= 1, so they only ever scale a loss down.
    """
    priorities = advantages.detach().abs().double().pow(alpha) + 1e-6
    probabilities = priorities / priorities.sum()
    weights = (advantages.numel() * probabilities).pow(-beta)
    return probabilities.numpy(), (weights / weights.max()).float()


@dataclass(frozen=True)
class EntropySchedule:
    """The entropy coefficient: linear from `coef` at update `first` to `end` at update `last` - 1, flat after.

    train() starts one from where the coefficient stands, so train() once, train(1) repeatedly, or
    a run resumed from a checkpoint follow one line, and a longer call stretches what is left of it.
    """

    first: int
    coef: float
    last: int
    end: float

    def at(self, update: int) -> float:
        """The coefficient of update `update` (0-based over the model's life)."""
        left = self.last - 1 - self.first
        fraction = 1.0 if left <= 0 else min((update - self.first) / left, 1.0)
        return self.coef + (self.end - self.coef) * fraction


def ppo_agent_loss(actor: nn.Module, obs: torch.Tensor, actions: torch.Tensor, old_logprobs: torch.Tensor,
                   advantages: torch.Tensor, targets: torch.Tensor, weights: torch.Tensor, clip: float,
                   entropy_coef: float, value_coef: float) -> tuple[torch.Tensor, dict[str, float]]:
    """One agent's loss on a minibatch: clipped surrogate on the team advantage, entropy bonus, and its own
    value head regressing onto the standardized returns; `weights` are the prioritized-sampling corrections."""
    logits, value = actor(obs)
    policy = torch.distributions.Categorical(logits=logits)
    log_ratio = policy.log_prob(actions) - old_logprobs
    ratio = log_ratio.exp()
    pg_loss = (weights * torch.max(-advantages * ratio, -advantages * torch.clamp(ratio, 1 - clip, 1 + clip))).mean()
    entropy = policy.entropy().mean()
    value_loss = 0.5 * (weights * (value - targets) ** 2).mean()
    with torch.no_grad():
        approx_kl = ((ratio - 1) - log_ratio).mean().item()
        clip_fraction = ((ratio - 1.0).abs() > clip).float().mean().item()
    loss = pg_loss - entropy_coef * entropy + value_coef * value_loss
    return loss, {"policy_loss": pg_loss.item(), "entropy": entropy.item(), "actor_value_loss": value_loss.item(),
                  "approx_kl": approx_kl, "clip_fraction": clip_fraction}


def critic_value_loss(critic: nn.Module, states: torch.Tensor, old_values: torch.Tensor, targets: torch.Tensor,
                      weights: torch.Tensor, clip: float | None) -> torch.Tensor:
    """The centralized critic's value loss on the standardized scale, clipped around its collected values."""
    new_value = critic(states)
    loss = (new_value - targets) ** 2
    if clip is not None:
        clipped = old_values + torch.clamp(new_value - old_values, -clip, clip)
        loss = torch.max(loss, (clipped - targets) ** 2)
    return 0.5 * (weights * loss).mean()


@dataclass
class Trajectories:
    """One update's experience, time-major (T steps, n envs)."""

    obs: torch.Tensor  # (T, n, window, 7)
    actions: torch.Tensor  # (T, n, agents) int64 indices into the policy's outputs (Action value - 1)
    logprobs: torch.Tensor  # (T, n, agents)
    values: torch.Tensor  # (T, n) critic output (normalized scale)
    next_values: torch.Tensor  # (T, n) critic output for the state after each step (normalized scale)
    rewards: torch.Tensor  # (T, n)
    dones: torch.Tensor  # (T, n) 1.0 where the episode ended with this step
    episode_returns: list[float]


class TacticalMAPPOTrainer:
    """Trains a TacticalMARLSystem on the trading environment.

    config: a Config, a parsed YAML mapping (merged over the packaged defaults), or a YAML path.
    bars: the series to train on (default: the config's synthetic series); its last
    training.holdout_fraction is held out for `evaluate()`. progress: a tqdm bar; log_metrics:
    append per-update records to paths.metrics, all of this trainer's under one run id. Under
    torch.distributed each rank collects its own trajectories and gradients are averaged; rank 0 logs.
    """

    def __init__(self, config: Config | Mapping[str, Any] | str | Path | None = None, *, bars: Bars | None = None,
                 series: TradingSeries | None = None, progress: bool = True, log_metrics: bool = True):
        self.config = cfg = as_config(config)
        t = cfg.training
        self.dist = DistContext.current()
        self.progress = progress and self.dist.is_main
        self.progress_label = "training"
        self.metrics_log = MetricsLog(cfg.paths.metrics) if log_metrics and self.dist.is_main else None
        torch.set_num_threads(t.torch_threads)

        torch.manual_seed(t.seed)  # identical initial weights on every rank
        self.model = TacticalMARLSystem(cfg).eval()
        self.dist.broadcast_module(self.model)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=t.learning_rate, eps=ADAM_EPS)
        self.value_norm = ValueNormalizer(t.value_normalization)

        if series is None:
            series = TradingSeries.from_bars(bars, cfg) if bars is not None else TradingSeries.synthetic(cfg)
        self.series = series
        self.envs = VectorTradingEnv(cfg, series, t.num_envs)

        self.updates_done = 0  # over the model's whole life, restored by load_checkpoint
        self.env_steps = 0
        self.last_stats: dict[str, float] = {}
        self._inference_s: list[float] = []
        self._update_s: list[float] = []
        self._collect_s: list[float] = []
        self.entropy_coef = t.entropy_coef_start  # the next update's; restored by load_checkpoint
        self.seed_streams()

    def seed_streams(self) -> None:
        """Seed the episode starts, action sampling, minibatch order and critic dropout of the next update.

        Seeds derive from (training.seed, rank, updates_done) and train() calls this before every
        update, so a run resumed from a checkpoint after n updates goes on exactly as an
        uninterrupted run would instead of replaying the episodes and action noise of update 1,
        and each rank plays its own episodes. The envs restart: an update's collection ends every episode anyway.
        """
        env_seed, action_seed, minibatch_seed, dropout_seed = (int(s) for s in np.random.SeedSequence(
            [self.config.training.seed, self.dist.rank, self.updates_done]).generate_state(4, np.uint64))
        self.next_obs = self.envs.reset(seed=env_seed)
        self.action_generator = torch.Generator().manual_seed(action_seed)
        self.minibatch_rng = np.random.default_rng(minibatch_seed)
        torch.manual_seed(dropout_seed)  # the critic's dropout masks

    # ------------------------------------------------------------------ training loop
    def train(self, updates: int | None = None,
              callback: Callable[[int, dict[str, float]], bool | None] | None = None) -> dict[str, float]:
        """Run `updates` updates (default training.updates); returns the last update's stats.

        The entropy coefficient follows an EntropySchedule from where it stands (entropy_coef_start
        for a new model) to entropy_coef_end at update max(training.updates, updates_done + updates).

        After each update, callback(update_index, stats) is called on every rank (update_index
        counts from 1 over the model's life); returning False stops training after that
        update, on every rank at once.
        """
        t = self.config.training
        updates = t.updates if updates is None else updates
        schedule = EntropySchedule(self.updates_done, self.entropy_coef, max(t.updates, self.updates_done + updates),
                                   t.entropy_coef_end)
        scale = t.reward_scale / 100  # rewards are scaled log returns; shown as % of log return per episode
        try:
            with progress_bar(updates, self.progress_label, "update", enabled=self.progress) as bar:
                for _ in range(updates):
                    self.seed_streams()
                    started = time.perf_counter()
                    batch = self.collect_trajectories()
                    collected = time.perf_counter()
                    advantages, returns = self.compute_advantages(batch)
                    stats = self.optimize(batch, advantages, returns, self.entropy_coef)
                    self.entropy_coef = schedule.at(self.updates_done + 1)
                    finished = time.perf_counter()

                    self.updates_done += 1
                    steps = batch.rewards.numel() * self.dist.world_size
                    self.env_steps += steps
                    self._collect_s.append(collected - started)
                    self._update_s.append(finished - collected)
                    reward = self.dist.mean([float(np.mean(batch.episode_returns)) if batch.episode_returns
                                             else 0.0])[0]
                    stats = {"update": self.updates_done, "episode_reward": reward, **stats,
                             "steps_per_second": steps / (finished - started), "env_steps": self.env_steps,
                             "collect_seconds": collected - started, "update_seconds": finished - collected}
                    self.last_stats = stats
                    if self.metrics_log is not None:
                        self.metrics_log.write(stats)
                    bar.set_postfix_str(f"episode return {reward / scale:+.3f}%, kl {stats['approx_kl']:.4f}, ev "
                                        f"{stats['explained_variance']:.2f}, {stats['steps_per_second']:.0f} steps/s",
                                        refresh=False)
                    bar.update(1)
                    go_on = callback(self.updates_done, stats) if callback is not None else True
                    if not self.dist.all_true(go_on is not False):
                        break
        finally:
            self.model.eval()
        return self.last_stats

    # ------------------------------------------------------------------ 1. collect
    @torch.no_grad()
    def collect_trajectories(self) -> Trajectories:
        t = self.config.training
        steps, n, agents = t.episode_length, t.num_envs, len(AGENT_NAMES)
        window = self.config.features.window
        obs = torch.zeros((steps, n, window, self.next_obs.shape[-1]))
        actions = torch.zeros((steps, n, agents), dtype=torch.int64)
        logprobs = torch.zeros((steps, n, agents))
        values = torch.zeros((steps, n))
        next_values = torch.zeros((steps, n))
        rewards = torch.zeros((steps, n))
        dones = torch.zeros((steps, n))
        episode_returns: list[float] = []

        self.model.eval()
        for step in range(steps):
            obs[step] = torch.from_numpy(self.next_obs)
            started = time.perf_counter()
            for i, name in enumerate(AGENT_NAMES):
                logits, _ = self.model.actors[name](obs[step])
                action = torch.multinomial(torch.softmax(logits, -1), 1, generator=self.action_generator).squeeze(1)
                actions[step, :, i] = action
                logprobs[step, :, i] = torch.log_softmax(logits, -1).gather(1, action[:, None]).squeeze(1)
            values[step] = self.model.critic(obs[step].flatten(1))
            self._inference_s.append(time.perf_counter() - started)

            result = self.envs.step(actions_from_indices(actions[step].numpy()))
            rewards[step] = torch.from_numpy(result.rewards)
            dones[step] = torch.from_numpy(result.truncated.astype(np.float32))
            episode_returns.extend(result.episode_returns.tolist())
            if step > 0:
                next_values[step - 1] = values[step]
            if result.truncated.any():  # bootstrap a truncated episode from the window after its last step
                ended = torch.from_numpy(np.flatnonzero(result.truncated))
                next_values[step, ended] = self.model.critic(torch.from_numpy(result.final_observations).flatten(1))
            self.next_obs = result.observations
        # the last step's successor, for envs whose episode goes on into the next update's collection
        ongoing = dones[-1] == 0
        if ongoing.any():
            next_values[-1, ongoing] = self.model.critic(torch.from_numpy(self.next_obs).flatten(1))[ongoing]
        return Trajectories(obs, actions, logprobs, values, next_values, rewards, dones, episode_returns)

    # ------------------------------------------------------------------ 2. GAE
    def compute_advantages(self, r: Trajectories) -> tuple[torch.Tensor, torch.Tensor]:
        """Generalized advantage estimates and returns, (T, n) each, in reward units."""
        t = self.config.training
        values = self.value_norm.denormalize(r.values)
        next_values = self.value_norm.denormalize(r.next_values)
        advantages = torch.zeros_like(r.rewards)
        last_gae = torch.zeros(r.rewards.shape[1])
        for step in reversed(range(r.rewards.shape[0])):
            delta = r.rewards[step] + t.gamma * next_values[step] - values[step]
            last_gae = delta + t.gamma * t.gae_lambda * (1.0 - r.dones[step]) * last_gae
            advantages[step] = last_gae
        return advantages, advantages + values

    # ------------------------------------------------------------------ 3.-5. optimization
    def optimize(self, r: Trajectories, advantages: torch.Tensor, returns: torch.Tensor,
                 entropy_coef: float) -> dict[str, float]:
        t = self.config.training
        b_obs = r.obs.reshape(-1, *r.obs.shape[2:])
        b_states = b_obs.flatten(1)
        b_actions = r.actions.reshape(-1, r.actions.shape[-1])
        b_logprobs = r.logprobs.reshape(-1, r.logprobs.shape[-1])
        b_old_values = self.value_norm.denormalize(r.values.reshape(-1))  # reward units, under the old statistics
        b_advantages = advantages.reshape(-1)
        b_returns = returns.reshape(-1)
        batch = b_advantages.numel()

        # value normalization: update the running statistics, then regress onto standardized returns;
        # the critic's old values (the value clip's centre) are re-expressed under the new statistics too
        self.value_norm.update(b_returns, self.dist)
        b_targets = self.value_norm.normalize(b_returns)
        b_values = self.value_norm.normalize(b_old_values)
        b_norm_advantages = b_advantages
        if t.normalize_advantages:
            b_norm_advantages = (b_advantages - b_advantages.mean()) / (b_advantages.std() + 1e-8)

        # prioritized minibatch sampling: P(i) ~ |A_i|^alpha, importance weights (N * P(i))^-beta / max
        if t.prioritized_sampling:
            probabilities, b_weights = priority_sampling(b_advantages, t.priority_alpha, t.priority_beta)
        else:
            probabilities, b_weights = None, torch.ones(batch)

        networks = {**{name: self.model.actors[name] for name in AGENT_NAMES}, "critic": self.model.critic}
        n_minibatches = max(1, batch // t.minibatch_size)
        sums = dict.fromkeys(("policy_loss", "value_loss", "actor_value_loss", "entropy", "approx_kl", "clip_fraction",
                              *(f"grad_norm_{name}" for name in networks)), 0.0)
        count = 0
        epochs_run = 0

        self.model.critic.train()  # dropout in the critic; actors stay in eval mode (see the module docstring)
        for _ in range(t.epochs):
            if probabilities is None:
                order = self.minibatch_rng.permutation(batch)
            else:
                order = self.minibatch_rng.choice(batch, size=batch, replace=True, p=probabilities)
            epoch_kl = 0.0
            for mb in np.array_split(order, n_minibatches):
                mb = torch.from_numpy(mb)
                loss = torch.zeros(())
                for i, name in enumerate(AGENT_NAMES):
                    agent_loss, agent_stats = ppo_agent_loss(
                        self.model.actors[name], b_obs[mb], b_actions[mb, i], b_logprobs[mb, i], b_norm_advantages[mb],
                        b_targets[mb], b_weights[mb], t.clip_epsilon, entropy_coef, t.value_loss_coef)
                    loss = loss + agent_loss
                    for key, value in agent_stats.items():
                        sums[key] += value / len(AGENT_NAMES)
                    epoch_kl += agent_stats["approx_kl"] / len(AGENT_NAMES) / n_minibatches
                v_loss = critic_value_loss(self.model.critic, b_states[mb], b_values[mb], b_targets[mb], b_weights[mb],
                                           t.clip_epsilon if t.clip_value_loss else None)
                loss = loss + t.value_loss_coef * v_loss

                self.optimizer.zero_grad()
                loss.backward()
                self.dist.average_gradients(self.model.parameters())
                for name, network in networks.items():  # clipped per network; the norm before clipping is logged
                    sums[f"grad_norm_{name}"] += float(nn.utils.clip_grad_norm_(network.parameters(), t.max_grad_norm))
                self.optimizer.step()
                sums["value_loss"] += v_loss.item()
                count += 1
            epochs_run += 1
            if t.target_kl > 0 and self.dist.mean([epoch_kl])[0] > t.target_kl:
                break
        self.model.eval()

        # explained variance of the critic's collected values: returns - values is exactly the advantage
        var_returns = b_returns.var()
        explained_variance = float("nan") if var_returns == 0 else float(1 - b_advantages.var() / var_returns)
        return {**{k: v / count for k, v in sums.items()}, "explained_variance": explained_variance,
                "entropy_coef": entropy_coef, "epochs": epochs_run,
                "value_norm_mean": self.value_norm.mean, "value_norm_std": self.value_norm.std}

    # ------------------------------------------------------------------ checkpoints, evaluation, stats
    def trainer_state(self) -> dict[str, Any]:
        """What a checkpoint needs beyond weights and optimizer to resume: update count, value normalizer."""
        return {"updates_done": self.updates_done, "env_steps": self.env_steps, "entropy_coef": self.entropy_coef,
                "value_norm": self.value_norm.state_dict()}

    def save_checkpoint(self, path: str | Path) -> Path:
        """Write weights, optimizer, value normalizer and progress to `path`, atomically."""
        return checkpoints.save_checkpoint(path, self.model, version=self.updates_done, optimizer=self.optimizer,
                                           metrics=self.last_stats, extra={"trainer": self.trainer_state()})

    def load_checkpoint(self, path: str | Path) -> dict[str, Any]:
        """Resume from a checkpoint file (or a model-store version directory holding checkpoint.pt).

        Restores weights, optimizer and, when the checkpoint came from a trainer, the value
        normalizer and update count. Returns the checkpoint payload.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "checkpoint.pt"
        _, payload = checkpoints.load_checkpoint(path, self.model, self.optimizer)
        state = payload.get("extra", {}).get("trainer")
        if state is not None:
            self.updates_done = int(state["updates_done"])
            self.env_steps = int(state["env_steps"])
            self.value_norm.load_state_dict(state["value_norm"])
            t = self.config.training  # (checkpoints from before the coefficient was saved: where the schedule puts it)
            self.entropy_coef = float(state.get("entropy_coef", EntropySchedule(
                0, t.entropy_coef_start, t.updates, t.entropy_coef_end).at(self.updates_done)))
        self.model.eval()
        return payload

    def evaluate(self, *, seed: int | None = None) -> dict[str, PolicyScore]:
        """Scores on the held-out tail: the model (its served decision), always-Hold, and random votes."""
        return evaluate_holdout(self.model, self.series, self.config,
                                seed=self.config.training.seed if seed is None else seed, part=HOLDOUT)

    def validate(self) -> Validation:
        """The held-out score checkpoint selection compares: returns net of costs, Sharpe, against flat and
        buy-and-hold (training.evaluation.validate)."""
        return validate(self.model, self.series, self.config)

    def get_performance_stats(self) -> dict[str, float]:
        """Timing so far: policy inference per collected step (batch of num_envs), update and collection time."""
        inference = np.asarray(self._inference_s) * 1000
        total = sum(self._collect_s) + sum(self._update_s)
        return {
            "inference_ms_mean": float(inference.mean()) if inference.size else float("nan"),
            "inference_ms_p99": float(np.percentile(inference, 99)) if inference.size else float("nan"),
            "inference_batch": self.config.training.num_envs,
            "update_ms_mean": float(np.mean(self._update_s) * 1000) if self._update_s else float("nan"),
            "collect_ms_mean": float(np.mean(self._collect_s) * 1000) if self._collect_s else float("nan"),
            "steps_per_second": (len(self._collect_s) * self.config.training.num_envs
                                 * self.config.training.episode_length * self.dist.world_size / total
                                 if total > 0 else float("nan")),
            "updates": len(self._update_s),
        }

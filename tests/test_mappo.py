"""The MAPPO trainer's parts: GAE and its truncation bootstrap, value normalization, prioritized sampling
and its importance weights, the entropy schedule, determinism, logging, stopping, checkpoints."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import yaml

from agents.serving.model_store import ModelStore
from tactical.config import default_config
from training.distributed import DistContext
from training.mappo import TacticalMAPPOTrainer, Trajectories, priority_sampling
from training.metrics_log import read_metrics
from training.value_norm import ValueNormalizer
from training.versions import publish

STAT_KEYS = {"update", "episode_reward", "policy_loss", "value_loss", "actor_value_loss", "entropy", "approx_kl",
             "clip_fraction", "explained_variance", "steps_per_second", "entropy_coef", "epochs", "env_steps",
             "collect_seconds", "update_seconds", "grad_norm_fvg", "grad_norm_momentum", "grad_norm_entry",
             "grad_norm_critic", "value_norm_mean", "value_norm_std"}


TINY = {"num_envs": 2, "episode_length": 8, "minibatch_size": 16, "epochs": 1}  # for tests that count updates


def small_config(tmp_path, **training):
    """A few-second config: 4 envs x 16 steps, 2 minibatches of 32, 2 epochs."""
    return default_config().replace(
        training={"num_envs": 4, "episode_length": 16, "minibatch_size": 32, "epochs": 2, **training},
        synthetic={"bars": 3000},
        paths={"metrics": str(tmp_path / "metrics.jsonl"), "model_store": str(tmp_path / "store")})


def parameters(trainer):
    return {k: v.detach().clone() for k, v in trainer.model.state_dict().items()}


def assert_same_parameters(a, b):
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)


def test_gae_is_the_discounted_sum_of_td_errors_within_each_episode(tmp_path):
    trainer = TacticalMAPPOTrainer(small_config(tmp_path, value_normalization=False), progress=False)
    gamma, lam = trainer.config.training.gamma, trainer.config.training.gae_lambda
    rng = np.random.default_rng(0)
    T, n = 7, 3
    rewards, values, next_values = (torch.from_numpy(rng.normal(size=(T, n))).float() for _ in range(3))
    dones = torch.zeros(T, n)
    dones[2, 0] = dones[4, 1] = dones[6, :] = 1.0
    batch = Trajectories(torch.zeros(T, n, 60, 7), torch.zeros(T, n, 3, dtype=torch.int64), torch.zeros(T, n, 3),
                      values, next_values, rewards, dones, [])
    advantages, returns = trainer.compute_advantages(batch)
    delta = rewards + gamma * next_values - values
    for env in range(n):
        for t in range(T):
            expected, discount = 0.0, 1.0
            for k in range(t, T):
                expected += discount * delta[k, env].item()
                if dones[k, env]:
                    break
                discount *= gamma * lam
            assert advantages[t, env].item() == pytest.approx(expected, rel=1e-5, abs=1e-6)
    torch.testing.assert_close(returns, advantages + values)


def test_collection_bootstraps_a_truncated_episode_with_the_window_after_its_last_step(tmp_path):
    trainer = TacticalMAPPOTrainer(small_config(tmp_path), progress=False)
    trainer.next_obs = trainer.envs.reset(seed=0)
    batch = trainer.collect_trajectories()
    T = trainer.config.training.episode_length
    assert batch.obs.shape == (T, 4, 60, 7) and batch.actions.shape == (T, 4, 3)
    torch.testing.assert_close(batch.next_values[:-1], batch.values[1:])  # no episode ends mid-batch
    assert batch.dones[-1].all() and not batch.dones[:-1].any()
    windows = torch.from_numpy(trainer.series.windows.copy())
    for env in range(4):
        last = torch.nonzero((windows == batch.obs[-1, env]).all(dim=(1, 2))).flatten()[0]
        following = windows[last + 1].reshape(1, -1)
        with torch.no_grad():
            expected = trainer.model.critic(following)[0]
        assert batch.next_values[-1, env].item() == pytest.approx(expected.item(), rel=1e-5, abs=1e-6)
    # log-probabilities are those of the actions under the acting (eval-mode) actors
    with torch.no_grad():
        logits, _ = trainer.model.actors["momentum"](batch.obs[3])
    expected = torch.log_softmax(logits, -1).gather(1, batch.actions[3, :, 1:2]).squeeze(1)
    torch.testing.assert_close(batch.logprobs[3, :, 1], expected)
    assert len(batch.episode_returns) == 4


def test_value_normalizer_tracks_mean_and_std_and_inverts():
    norm = ValueNormalizer(True, epsilon=1e-12)
    rng = np.random.default_rng(1)
    batches = [rng.normal(3.0, 2.0, size=500), rng.normal(-1.0, 0.5, size=300)]
    for b in batches:
        norm.update(torch.from_numpy(b), DistContext())
    all_values = np.concatenate(batches)
    assert norm.mean == pytest.approx(all_values.mean(), rel=1e-9)
    assert norm.std == pytest.approx(all_values.std(), rel=1e-6)
    x = torch.tensor([0.5, -2.0, 7.0], dtype=torch.float64)
    torch.testing.assert_close(norm.denormalize(norm.normalize(x)), x)
    off = ValueNormalizer(False)
    off.update(torch.from_numpy(batches[0]), DistContext())
    torch.testing.assert_close(off.normalize(x), x)


def test_value_clip_is_centred_on_the_old_values_under_the_updated_statistics(tmp_path):
    """The critic predicted its batch values under the statistics before this batch's returns
    were merged in; the clip centre is those values in reward units, standardized like the targets."""
    # one minibatch and no dropout, so the reported loss is computable here; rewards far larger than
    # the statistics so far (std 0.2), so the update moves them a lot
    cfg = small_config(tmp_path, epochs=1, minibatch_size=64, prioritized_sampling=False,
                       reward_scale=2000.0).replace(model={"dropout": 0.0})
    trainer = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    trainer.value_norm.load_state_dict({"enabled": True, "mean": 2.0, "var": 0.04, "count": 10.0})
    batch = trainer.collect_trajectories()
    advantages, returns = trainer.compute_advantages(batch)
    with torch.no_grad():
        new = trainer.model.critic(batch.obs.reshape(64, -1))  # the critic before its first step
    stats = trainer.optimize(batch, advantages, returns, 1)
    mean, std = trainer.value_norm.mean, trainer.value_norm.std
    assert std > 5 * 0.2
    targets = (returns.reshape(-1) - mean) / std
    eps = cfg.training.clip_epsilon

    def clipped_loss(centre):
        clipped = centre + torch.clamp(new - centre, -eps, eps)
        return 0.5 * torch.max((new - targets) ** 2, (clipped - targets) ** 2).mean().item()

    centre = (batch.values.reshape(-1) * 0.2 + 2.0 - mean) / std
    assert stats["value_loss"] == pytest.approx(clipped_loss(centre), rel=1e-4)
    assert clipped_loss(centre) != pytest.approx(clipped_loss(batch.values.reshape(-1)), rel=1e-2)


def test_priority_sampling_probabilities_and_importance_weights():
    adv = torch.tensor([0.0, -0.5, 1.0, 2.0, -4.0])
    probabilities, weights = priority_sampling(adv, alpha=0.5, beta=0.4)
    p = (adv.abs().double() ** 0.5 + 1e-6)
    p = (p / p.sum()).numpy()
    np.testing.assert_allclose(probabilities, p)
    expected = (5 * p) ** -0.4
    np.testing.assert_allclose(weights.numpy(), expected / expected.max(), rtol=1e-6)
    assert weights.max().item() == pytest.approx(1.0)
    assert weights[4] < weights[3] < weights[2] < weights[1]  # oftener sampled, smaller weight
    _, flat = priority_sampling(adv, alpha=0.5, beta=0.0)
    torch.testing.assert_close(flat, torch.ones(5))


def test_importance_weights_actually_change_the_update(tmp_path):
    """Same batches, same sampled minibatches; only beta differs, so only the loss weights differ."""
    results = []
    for beta in (0.0, 0.0, 1.0):
        trainer = TacticalMAPPOTrainer(small_config(tmp_path, priority_beta=beta), progress=False,
                                       log_metrics=False)
        trainer.train(1)
        results.append(parameters(trainer))
    assert_same_parameters(results[0], results[1])
    changed = [k for k in results[0] if not torch.equal(results[0][k], results[2][k])]
    assert any("actors.momentum.policy_head" in k for k in changed) and any("critic" in k for k in changed)


def test_same_seed_trains_identically_and_another_seed_does_not(tmp_path):
    runs = []
    for seed in (5, 5, 6):
        trainer = TacticalMAPPOTrainer(small_config(tmp_path, **TINY, seed=seed), progress=False, log_metrics=False)
        initial = parameters(trainer)
        stats = trainer.train(2)
        runs.append((initial, parameters(trainer), stats))
    assert_same_parameters(runs[0][1], runs[1][1])
    assert runs[0][2]["episode_reward"] == runs[1][2]["episode_reward"]
    assert runs[0][2]["policy_loss"] == runs[1][2]["policy_loss"]
    assert not torch.equal(runs[0][1]["actors.fvg.policy_head.weight"], runs[2][1]["actors.fvg.policy_head.weight"])
    trained = [k for k in runs[0][0] if not torch.equal(runs[0][0][k], runs[0][1][k])]
    for head in ("policy_head", "value_head"):  # the actors' value heads learn too (auxiliary loss)
        for agent in ("fvg", "momentum", "entry"):
            assert f"actors.{agent}.{head}.weight" in trained
    assert "critic.value_head.weight" in trained


def recorded_batches(trainer):
    """The list of every batch `trainer` collects from now on."""
    batches = []
    collect = trainer.collect_trajectories

    def collect_and_keep():
        batches.append(collect())
        return batches[-1]

    trainer.collect_trajectories = collect_and_keep
    return batches


def test_a_resumed_run_goes_on_as_an_uninterrupted_one_instead_of_replaying_its_start(tmp_path):
    cfg = small_config(tmp_path, **TINY)
    uninterrupted = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    played = recorded_batches(uninterrupted)
    uninterrupted.train(3)

    first = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    first.train(1)
    resumed = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    resumed.load_checkpoint(first.save_checkpoint(tmp_path / "after-1.pt"))
    replayed = recorded_batches(resumed)
    resumed.train(2)

    assert not torch.equal(replayed[0].obs[0], played[0].obs[0])  # update 2 starts its episodes elsewhere
    for mine, theirs in zip(replayed, played[1:], strict=True):  # the episodes and actions of updates 2 and 3
        torch.testing.assert_close(mine.obs, theirs.obs, rtol=0, atol=0)
        torch.testing.assert_close(mine.actions, theirs.actions, rtol=0, atol=0)
    assert_same_parameters(parameters(resumed), parameters(uninterrupted))


def test_train_logs_every_update_and_the_callback_can_stop_it(tmp_path):
    cfg = small_config(tmp_path)
    trainer = TacticalMAPPOTrainer(cfg, progress=False)
    seen = []

    def callback(index, stats):
        seen.append((index, dict(stats)))
        return index < 2

    started = time.time()
    last = trainer.train(5, callback=callback)
    assert [i for i, _ in seen] == [1, 2] and trainer.updates_done == 2
    logged = read_metrics(cfg.paths.metrics)
    assert [r["update"] for r in logged] == [1, 2] and {r["run"] for r in logged} == {trainer.metrics_log.run}
    assert started <= logged[0]["time"] <= logged[1]["time"] <= time.time()
    records = [{k: v for k, v in r.items() if k not in ("run", "time")} for r in logged]
    assert set(records[-1]) == STAT_KEYS and records[-1] == pytest.approx(last)
    for record in records:
        assert all(math.isfinite(v) for v in record.values())
        assert record["epochs"] == 2 and record["env_steps"] == 64 * record["update"]
        assert 0.0 <= record["clip_fraction"] <= 1.0 and record["entropy"] <= math.log(3) + 1e-6


def test_a_second_run_appends_its_records_under_its_own_run_id(tmp_path):
    cfg = small_config(tmp_path, epochs=1)
    first = TacticalMAPPOTrainer(cfg, progress=False)
    first.train(1)
    first.train(1)  # one trainer, one run
    second = TacticalMAPPOTrainer(cfg, progress=False)
    second.train(1)
    records = read_metrics(cfg.paths.metrics)
    assert [(r["run"], r["update"]) for r in records] == [
        (first.metrics_log.run, 1), (first.metrics_log.run, 2), (second.metrics_log.run, 1)]
    assert first.metrics_log.run != second.metrics_log.run


def entropy_coefficients(trainer, *calls):
    """The entropy coefficient of every update of train(n) for each n in `calls`."""
    coefs = []
    for updates in calls:
        trainer.train(updates, callback=lambda i, s: coefs.append(s["entropy_coef"]))
    return coefs


def test_entropy_coefficient_decays_linearly_over_the_configured_updates(tmp_path):
    cfg = small_config(tmp_path, **TINY, updates=3)
    trainer = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    assert entropy_coefficients(trainer, 3) == pytest.approx([0.01, 0.0055, 0.001])
    assert entropy_coefficients(trainer, 1) == pytest.approx([0.001])  # past the schedule: the end value

    one_at_a_time = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    assert entropy_coefficients(one_at_a_time, 1, 1, 1, 1) == pytest.approx([0.01, 0.0055, 0.001, 0.001])

    longer = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)  # a longer call stretches the schedule
    assert entropy_coefficients(longer, 5) == pytest.approx([0.01, 0.00775, 0.0055, 0.00325, 0.001])


def test_a_resumed_run_continues_the_entropy_schedule(tmp_path):
    cfg = small_config(tmp_path, **TINY, updates=5)
    first = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    assert entropy_coefficients(first, 2) == pytest.approx([0.01, 0.00775])
    resumed = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    resumed.load_checkpoint(first.save_checkpoint(tmp_path / "after-2.pt"))
    assert entropy_coefficients(resumed, 3) == pytest.approx([0.0055, 0.00325, 0.001])


def test_the_entropy_coefficient_never_jumps_back_up(tmp_path):
    cfg = small_config(tmp_path, **TINY, updates=3)
    finished = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    assert entropy_coefficients(finished, 3, 2) == pytest.approx([0.01, 0.0055, 0.001, 0.001, 0.001])
    interrupted = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    entropy_coefficients(interrupted, 1)  # stopped after 1 of 3; then `tactical train --resume` runs 3 more
    resumed = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    resumed.load_checkpoint(interrupted.save_checkpoint(tmp_path / "after-1.pt"))
    assert entropy_coefficients(resumed, 3) == pytest.approx([0.0055, 0.00325, 0.001])


def test_target_kl_stops_the_epochs_early(tmp_path):
    trainer = TacticalMAPPOTrainer(small_config(tmp_path, epochs=4, target_kl=1e-12), progress=False,
                                   log_metrics=False)
    assert trainer.train(1)["epochs"] == 1


def test_checkpoint_restores_weights_optimizer_normalizer_and_progress(tmp_path):
    cfg = small_config(tmp_path, **TINY)
    trainer = TacticalMAPPOTrainer(cfg, progress=False, log_metrics=False)
    trainer.train(2)
    path = trainer.save_checkpoint(tmp_path / "ckpt.pt")
    version = publish(ModelStore(cfg.paths.model_store), trainer.model, source="test", optimizer=trainer.optimizer,
                      extra={"trainer": trainer.trainer_state()})
    for source in (path, ModelStore(cfg.paths.model_store).path(version)):
        other = TacticalMAPPOTrainer(small_config(tmp_path, **TINY, seed=9), progress=False, log_metrics=False)
        other.load_checkpoint(source)
        assert_same_parameters(parameters(trainer), parameters(other))
        assert other.updates_done == 2 and other.env_steps == trainer.env_steps
        assert other.value_norm.state_dict() == trainer.value_norm.state_dict()
        s1, s2 = trainer.optimizer.state_dict()["state"], other.optimizer.state_dict()["state"]
        torch.testing.assert_close(s1[0]["exp_avg"], s2[0]["exp_avg"])
        assert not other.model.training  # ready for inference, dropout off
        assert other.train(1)["update"] == 3


def test_config_may_be_a_config_a_parsed_yaml_mapping_or_a_path(tmp_path):
    cfg = small_config(tmp_path, num_envs=3)
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    for form in (cfg, yaml.safe_load(path.read_text()), str(path), path):
        assert TacticalMAPPOTrainer(form, progress=False).envs.num_envs == 3


def test_performance_stats(tmp_path):
    trainer = TacticalMAPPOTrainer(small_config(tmp_path), progress=False, log_metrics=False)
    trainer.train(2)
    stats = trainer.get_performance_stats()
    assert stats["updates"] == 2 and stats["inference_batch"] == 4
    assert 0 < stats["inference_ms_mean"] < stats["collect_ms_mean"]  # a policy forward is one part of a step
    steps, seconds = 2 * 4 * 16, 2 * (stats["collect_ms_mean"] + stats["update_ms_mean"]) / 1000
    assert stats["steps_per_second"] == pytest.approx(steps / seconds)

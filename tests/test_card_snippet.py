"""The original model card's usage works with only its import line changed.

The snippet below is the card's, verbatim except the trainer import; it runs in a directory
holding the packaged config at configs/ and a checkpoint from a short training run at models/.
"""

from __future__ import annotations

import shutil

import numpy

from configs import DEFAULT_CONFIG_PATH
from tactical.config import default_config
from training.mappo import TacticalMAPPOTrainer


def test_card_usage_snippet(tmp_path, monkeypatch, capsys):
    (tmp_path / "configs").mkdir()
    shutil.copy(DEFAULT_CONFIG_PATH, tmp_path / "configs" / "tactical_marl_v1.yaml")
    monkeypatch.chdir(tmp_path)
    short_run = default_config().replace(
        training={"num_envs": 2, "episode_length": 8, "minibatch_size": 16, "epochs": 1},
        synthetic={"bars": 3000},
        paths={"metrics": str(tmp_path / "metrics.jsonl")})
    trained = TacticalMAPPOTrainer(short_run, progress=False)
    trained.train(2)
    trained.save_checkpoint("models/tactical_marl_initial.pt")
    numpy.random.seed(0)  # (the snippet imports numpy as np and torch itself)

    # ---- the card's snippet -------------------------------------------------------------
    import yaml

    from training.mappo import (
        TacticalMAPPOTrainer as CardTrainer,  # card: from training.tactical_mappo_trainer import ...
    )
    with open('configs/tactical_marl_v1.yaml') as f:
        config = yaml.safe_load(f)
    trainer = CardTrainer(config)
    trainer.load_checkpoint('models/tactical_marl_initial.pt')
    import numpy as np
    import torch
    market_data = np.random.random((60, 7))
    state_tensor = torch.FloatTensor(market_data).unsqueeze(0)
    with torch.no_grad():
        model_output = trainer.model(state_tensor, deterministic=True)
        actions = {}
        for agent_name in ['fvg', 'momentum', 'entry']:
            agent_output = model_output['agents'][agent_name]
            actions[agent_name] = agent_output['action'].item()
    print(f"Agent decisions: {actions}")
    # ---- end of the snippet ---------------------------------------------------------------

    assert capsys.readouterr().out.strip() == f"Agent decisions: {actions}"
    assert set(actions) == {"fvg", "momentum", "entry"} and set(actions.values()) <= {0, 1, 2}
    with torch.no_grad():  # the decisions are the trained model's argmax on that window
        expected = trained.model(state_tensor, deterministic=True)["agents"]
    for name, action in actions.items():
        assert action == expected[name]["probabilities"].argmax(-1).item()
        torch.testing.assert_close(model_output["agents"][name]["probabilities"], expected[name]["probabilities"])
    assert trainer.updates_done == 2

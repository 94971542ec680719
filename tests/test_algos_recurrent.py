"""RL2 / E-RL2 / MetODS agents (metakern.algos.recurrent): the GRU's window pass against step-by-step
acting, trial resets and E-RL2's reward mask in the rollouts, truncated-BPTT state handling, the
evaluation protocols, run folders, resume and the CLI."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
from metakern.algos import erl2, metods, recurrent, rl2
from metakern.cli import main as cli_main

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny(module=rl2, **kw):
    base = dict(num_envs=6, rollout_steps=12, iterations=3, eval_every=2, eval_trials=4, checkpoint_every=1,
                krazy_train_tasks=8, hidden=8, minibatches=2, epochs=2, eval_large_maze=12)  # fmt: skip
    base.update(kw)
    return module.CONFIG(**base)


# -- agents ------------------------------------------------------------------------------------------


def random_inputs(B, T, D, A, gen):
    x = torch.randn(B, T, D, generator=gen)
    pa = torch.randint(-1, A, (B, T), generator=gen)
    pr = torch.randn(B, T, generator=gen)
    reset = torch.rand(B, T, generator=gen) < 0.2
    return x, pa, pr, reset


def test_gru_window_equals_step_by_step_acting_and_nn_grucell():
    gen = torch.Generator().manual_seed(0)
    B, T, D, A, H = 5, 9, 7, 4, 6
    torch.manual_seed(0)
    pol = recurrent.GRUPolicy(D, A, H)
    x, pa, pr, reset = random_inputs(B, T, D, A, gen)
    h0 = torch.randn(B, H, generator=gen)
    seq = pol.forward_sequence(x, pa, pr, reset, h0)
    h = h0
    for t in range(T):
        out = pol(x[:, t], pa[:, t], pr[:, t], h, reset[:, t])
        torch.testing.assert_close(seq.logits[:, t], out.logits, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(seq.value[:, t], out.value, rtol=1e-5, atol=1e-6)
        h = out.state
    torch.testing.assert_close(seq.state, h, rtol=1e-5, atol=1e-6)
    # the hand-written recurrence is nn.GRUCell's
    inp = pol._inputs(x[:, 0], pa[:, 0], pr[:, 0])
    torch.testing.assert_close(pol(x[:, 0], pa[:, 0], pr[:, 0], h0).state, pol.cell(inp, h0))
    seq0 = pol.forward_sequence(x[:, :1], pa[:, :1], pr[:, :1], torch.zeros(B, 1, dtype=torch.bool), h0)
    torch.testing.assert_close(seq0.state, pol.cell(inp, h0), rtol=1e-5, atol=1e-6)


def test_gru_window_gradients_match_the_step_loop():
    gen = torch.Generator().manual_seed(1)
    B, T, D, A, H = 3, 6, 5, 3, 4
    pol = recurrent.GRUPolicy(D, A, H).double()
    x, pa, pr, reset = random_inputs(B, T, D, A, gen)
    x, pr = x.double(), pr.double()
    h0 = torch.randn(B, H, generator=gen, dtype=torch.float64)
    seq = pol.forward_sequence(x, pa, pr, reset, h0)
    g1 = torch.autograd.grad((seq.logits.sin().sum() + seq.value.cos().sum()), list(pol.parameters()))
    h, loss = h0, 0.0
    for t in range(T):
        out = pol(x[:, t], pa[:, t], pr[:, t], h, reset[:, t])
        loss = loss + out.logits.sin().sum() + out.value.cos().sum()
        h = out.state
    g2 = torch.autograd.grad(loss, list(pol.parameters()))
    for a, b in zip(g1, g2, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("path", ["cpp", "torch"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_gru_window_function_matches_the_autograd_reference(path, dtype, monkeypatch):
    """``_GRUWindow`` (hand-written backward; C++ gate kernels on CPU, tensor ops elsewhere) against
    the step loop through autograd: values and every gradient, gradcheck in float64."""
    if path == "torch":
        monkeypatch.setattr(recurrent, "_gates_module", lambda t: None)
    elif recurrent._gates_module(torch.zeros(1)) is None:
        pytest.skip("metakern's C++ module is not built")
    gen = torch.Generator().manual_seed(3)
    B, T, H = 6, 9, 5
    mk = lambda *shape: torch.randn(*shape, generator=gen, dtype=dtype).requires_grad_()  # noqa: E731
    gi, h0, w, b = mk(B, T, 3 * H), mk(B, H), mk(3 * H, H), mk(3 * H)
    keep = (torch.rand(B, T, 1, generator=gen) > 0.25).to(dtype)
    cot = torch.randn(B, T, H, generator=gen, dtype=dtype)
    ref = recurrent.gru_window_reference(gi, keep, h0, w, b)
    out = recurrent._GRUWindow.apply(gi, keep, h0, w, b)
    tol = {"rtol": 1e-12, "atol": 1e-12} if dtype == torch.float64 else {"rtol": 2e-5, "atol": 2e-6}
    torch.testing.assert_close(out, ref, **tol)
    g_ref = torch.autograd.grad((ref * cot).sum(), (gi, h0, w, b))
    g_out = torch.autograd.grad((out * cot).sum(), (gi, h0, w, b))
    for a, e in zip(g_out, g_ref, strict=True):
        torch.testing.assert_close(a, e, **tol)
    if dtype == torch.float64:
        assert torch.autograd.gradcheck(lambda *x: recurrent._GRUWindow.apply(x[0], keep, *x[1:]), (gi, h0, w, b))


# -- rollouts ----------------------------------------------------------------------------------------


def test_rollout_resets_memory_where_trials_start_and_erl2_masks_exploration():
    # 250 steps: several 5-episode trials end in 6 envs (episodes of a near-uniform policy last ~20 steps)
    agent = recurrent.RecurrentAgent(tiny(erl2, rollout_steps=250).validate())
    ro = agent.collect()
    assert ro.x.shape[:2] == (6, 250) and ro.actions.shape == (6, 250)
    # the first window starts every trial; later resets follow exactly the steps that ended a trial
    assert bool(ro.reset[:, 0].all())
    torch.testing.assert_close(ro.reset[:, 1:], ro.trial_done[:, :-1])
    # E-RL2: rewards of the 3 exploratory episodes are out of the objective, the agent still sees them
    explore = ro.raw_rewards != ro.rewards
    assert bool((ro.rewards[explore] == 0).all())
    assert bool((ro.prev_reward[:, 1:] == ro.raw_rewards[:, :-1]).where(~ro.trial_done[:, :-1], True).all())
    assert int(ro.trial_done.sum()) >= 1 and bool((ro.raw_rewards != 0).any())
    # RL2 keeps every reward
    ro2 = recurrent.RecurrentAgent(tiny(rl2, rollout_steps=250).validate()).collect()
    torch.testing.assert_close(ro2.rewards, ro2.raw_rewards)


def test_state_carries_across_windows_and_update_changes_the_policy():
    agent = recurrent.RecurrentAgent(tiny(rl2).validate())
    ro1 = agent.collect()
    ro2 = agent.collect()
    # truncated BPTT: the second window starts from the state the first ended with
    out = agent.policy.forward_sequence(ro1.x, ro1.prev_action, ro1.prev_reward, ro1.reset, ro1.state0)
    torch.testing.assert_close(out.state, ro2.state0, rtol=1e-5, atol=1e-6)
    before = [p.detach().clone() for p in agent.policy.parameters()]
    stats = agent.update(ro2)
    assert all(math.isfinite(v) for v in stats.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, agent.policy.parameters(), strict=True))


@pytest.mark.parametrize("update", ["ppo", "a2c"])
def test_both_updates_with_the_metods_agent(update):
    agent = recurrent.RecurrentAgent(tiny(metods, env="krazyworld", update=update).validate())
    stats = agent.step()
    assert all(math.isfinite(v) for v in stats.values())
    assert stats["clip_frac"] == 0.0 if update == "a2c" else stats["clip_frac"] >= 0.0


def test_maze_metrics_on_hand_made_episodes():
    r = torch.tensor([[0.0, 0.0, 10.0, 0.0, 10.0], [0.0, 0.0, 0.0, 0.0, 0.0]])
    m = torch.ones_like(r, dtype=torch.bool)
    out = recurrent.maze_metrics(r, torch.zeros_like(r, dtype=torch.long), m, prefix="x_")
    assert out == {"x_first_reward_step": (3 + 5) / 2, "x_success": 0.5, "x_cum_reward": 10.0}


# -- evaluation --------------------------------------------------------------------------------------


def test_erl2_protocol_reports_episodes_four_and_five():
    agent = recurrent.RecurrentAgent(tiny(rl2).validate())
    r, ep, m = agent.play_trials(agent._eval_env("eval"), 0, "eval")
    assert r.shape[0] == 4
    assert int(ep[m].max()) == 4 and int(ep[m].min()) == 0  # 5 episodes per evaluation trial
    row = agent.evaluate(0)
    per_ep = torch.stack([(r * (ep == e)).sum(1) for e in range(5)], 1)
    assert row["eval_return"] == pytest.approx(float(per_ep[:, 3:].sum(1).mean() / 2), abs=1e-6)
    # same iteration and seed -> the same numbers (evaluation draws are seeded)
    assert agent.evaluate(0) == row


def test_metods_maze_and_harlow_evaluations():
    agent = recurrent.RecurrentAgent(tiny(metods).validate())
    row = agent.evaluate(0)
    assert set(row) == set(recurrent.EVAL_COLUMNS["maze-metods"])
    assert 1 <= row["eval_first_reward_step"] <= 100 and 0 <= row["eval_success"] <= 1
    assert agent._eval_envs["eval-large"].family.size == 12
    h = recurrent.RecurrentAgent(tiny(rl2, env="harlow").validate())
    row = h.evaluate(0)
    assert set(row) == set(recurrent.EVAL_COLUMNS["harlow"])
    assert -5 <= row["eval_return"] <= 5


# -- runs, resume, CLI -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("module", "env", "extra"),
    [
        (rl2, "krazyworld", {}),
        (rl2, "maze", {}),
        (erl2, "krazyworld", {}),
        (erl2, "maze", {"update": "a2c"}),
        (metods, "maze", {}),
        (metods, "harlow", {"inner_steps": 1, "learn_alpha": False}),
        (rl2, "harlow", {}),
    ],
)
def test_train_smoke_writes_a_run_folder(tmp_path, module, env, extra):
    cfg = tiny(module, env=env, **extra)
    summary = module.train(cfg, tmp_path / "run", progress=False)
    assert summary["iteration"] == cfg.iterations and summary["env_steps"] == 3 * 6 * 12
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").read_text().splitlines()))
    assert len(rows) == cfg.iterations
    for col in recurrent.eval_columns(cfg):
        assert math.isfinite(float(rows[0][col])) and math.isfinite(float(rows[-1][col]))
    assert json.loads((tmp_path / "run" / "config.json").read_text())["env"] == env
    assert (tmp_path / "run" / "checkpoint.pt").exists()


def test_resume_reproduces_the_uninterrupted_run(tmp_path, monkeypatch):
    cfg = tiny(metods, env="krazyworld", iterations=4, checkpoint_every=2)
    metods.train(cfg, tmp_path / "a", progress=False)
    step = recurrent.RecurrentAgent.step
    calls = []

    def crash_at_4th(self):
        calls.append(1)
        if len(calls) == 4:
            raise KeyboardInterrupt
        return step(self)

    monkeypatch.setattr(recurrent.RecurrentAgent, "step", crash_at_4th)
    with pytest.raises(KeyboardInterrupt):
        metods.train(cfg, tmp_path / "b", progress=False)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["iteration"] == 2
    monkeypatch.setattr(recurrent.RecurrentAgent, "step", step)
    metods.train(cfg, tmp_path / "b", resume=True, progress=False)
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=False) for d in "ab")
    for k in a["policy"]:
        torch.testing.assert_close(a["policy"][k], b["policy"][k], rtol=0, atol=0)
    rows = [list(csv.DictReader((tmp_path / d / "metrics.csv").read_text().splitlines())) for d in "ab"]
    strip = lambda rs: [{k: v for k, v in r.items() if k not in ("seconds", "env_steps_per_s")} for r in rs]  # noqa: E731
    assert strip(rows[0]) == strip(rows[1])


def test_config_errors():
    with pytest.raises(ValueError, match="explore_episodes"):
        erl2.CONFIG(explore_episodes=5).validate()
    with pytest.raises(ValueError, match="env must be"):
        rl2.CONFIG(env="ipd").validate()
    with pytest.raises(ValueError, match="update must be"):
        rl2.CONFIG(update="trpo").validate()
    with pytest.raises(ValueError, match="minibatches"):
        rl2.CONFIG(num_envs=2, minibatches=4).validate()
    with pytest.raises(ValueError, match="inner_steps"):
        metods.CONFIG(inner_steps=0).validate()
    with pytest.raises(ValueError, match="lr"):
        rl2.CONFIG(lr=float("nan")).validate()


def test_cli_train_and_errors(tmp_path, capsys):
    out = tmp_path / "cli"
    args = ["train", "erl2", "--env", "krazyworld", "--iterations", "1", "--num-envs", "4", "--rollout-steps", "5",
            "--eval-trials", "2", "--krazy-train-tasks", "4", "--hidden", "4", "--minibatches", "2", "--out",
            str(out), "--quiet", "--threads", "1"]  # fmt: skip
    assert cli_main(args) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["iteration"] == 1 and "eval_return" in summary
    assert cli_main(args) == 2  # the folder holds a run: refused without --resume
    assert "already holds a run" in capsys.readouterr().err
    assert cli_main(["train", "metods", "--env", "maze", "--inner-steps", "0", "--out", str(tmp_path / "x")]) == 2
    assert "inner_steps" in capsys.readouterr().err

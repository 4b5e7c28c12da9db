"""The screening policy: shapes, masks, symmetries, ONNX parity, seeded training and resume."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from metascreen.domains.episodes import Task
from metascreen.domains.errors import ConfigError
from metascreen.models.nn.policy import NEG, PolicyConfig, ScreeningPolicy
from metascreen.models.training.export import export_policy_onnx, policy_parity_cases
from metascreen.models.training.policy import (
    PolicyTrainConfig,
    PolicyTrainResult,
    PoolSampler,
    train_policy,
)

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)  # tiny models: threads only add overhead


def _policy(
    use_history: bool = True, head: str | None = None, prior: bool = False, anchor: bool = False
) -> ScreeningPolicy:
    torch.manual_seed(0)
    cfg = PolicyConfig(
        d_model=16,
        heads=2,
        use_history=use_history,
        predictor_head=head,
        prior=prior,
        anchor=anchor,
    )
    pol = ScreeningPolicy(24, cfg).eval()
    if prior:
        pol.set_prior(torch.linspace(-1.0, 1.0, 24), 0.5)
    return pol


@pytest.mark.parametrize(("head", "prior"), [(None, False), ("multihead", False), (None, True)])
def test_masks_symmetries_and_empty_history(head: str | None, prior: bool) -> None:
    pol = _policy(head=head, prior=prior)
    cand, cm, hist, hl, hm, t = policy_parity_cases(24, seed=3)[1]
    with torch.no_grad():
        logits, value = pol(cand, cm, hist, hl, hm, t)
        assert logits.shape == cm.shape and value.shape == (cand.shape[0],)
        assert torch.isfinite(logits).all() and torch.isfinite(value).all()
        assert (logits[cm < 0.5] == NEG).all()
        # candidates: permutation-equivariant; history: permutation-invariant
        perm_n, perm_h = torch.randperm(cand.shape[1]), torch.randperm(hist.shape[1])
        lp, _ = pol(
            cand[:, perm_n], cm[:, perm_n], hist[:, perm_h], hl[:, perm_h], hm[:, perm_h], t
        )
        assert torch.allclose(lp, logits[:, perm_n], atol=1e-5)
        # masked history rows do not matter
        hist2 = torch.where(hm.unsqueeze(-1) > 0.5, hist, torch.randn_like(hist))
        l2, _ = pol(cand, cm, hist2, hl, hm, t)
        assert torch.allclose(l2, logits, atol=1e-5)
        # the history does matter when attention is on, and does not when it is off
        l3, _ = pol(cand, cm, hist, 1.0 - hl, hm, t)
        assert not torch.allclose(l3[1:], logits[1:], atol=1e-4)
        off = _policy(use_history=False, head=head, prior=prior)
        a, _ = off(cand, cm, hist, hl, hm, t)
        b, _ = off(cand, cm, hist, 1.0 - hl, hm * 0, t)
        assert torch.allclose(a, b, atol=1e-6)


@pytest.mark.parametrize(
    ("head", "prior", "anchor"),
    [(None, False, False), ("multihead", False, False), (None, True, False), ("gp", True, True)],
)
def test_onnx_parity_at_new_shapes(
    tmp_path: Path, head: str | None, prior: bool, anchor: bool
) -> None:
    pol = _policy(head=head, prior=prior, anchor=anchor)
    if anchor:  # a trained correction, not the zero it starts at
        with torch.no_grad():
            for p in pol.parameters():
                if p.requires_grad:
                    p.add_(0.05 * torch.randn_like(p))
    worst = export_policy_onnx(pol, tmp_path / "p.onnx")
    assert worst <= 1e-4
    import onnxruntime as ort

    sess = ort.InferenceSession(str(tmp_path / "p.onnx"), providers=["CPUExecutionProvider"])
    case = policy_parity_cases(24, seed=7)[2]
    names = [i.name for i in sess.get_inputs()]
    got = sess.run(None, {n: x.numpy() for n, x in zip(names, case, strict=True)})[0]
    with torch.no_grad():
        want = pol(*case)[0].numpy()
    assert np.abs(got - want).max() <= 1e-4


def test_anchored_policy_starts_as_greedy_prior_and_learns_a_correction() -> None:
    """``anchor``: at initialisation the score is greedy-prior's (head logit + prior once both
    classes are known, the prior alone before); training moves it through the correction."""
    pol = _policy(head="protonet", prior=True, anchor=True)
    cand, cm, hist, hl, hm, t = policy_parity_cases(24, seed=5)[1]
    hl[1] = torch.tensor([1.0, 0.0] * (hl.shape[1] // 2) + [1.0] * (hl.shape[1] % 2))
    hm[1] = 1.0
    hl[2], hm[2] = 0.0, 1.0  # inactives only: the prior alone
    logits, _ = pol(cand, cm, hist, hl, hm, t)
    from metascreen.models.learners.registry import build_head

    prior = cand @ torch.linspace(-1.0, 1.0, 24) + 0.5
    head = build_head("protonet").head(hist[1], hl[1], cand[1])
    ok = cm > 0.5
    assert torch.allclose(logits[1][ok[1]], (head + prior[1])[ok[1]], atol=1e-4)
    for b in (0, 2):  # empty history, inactives only
        assert torch.allclose(logits[b][ok[b]], prior[b][ok[b]], atol=1e-4)
    assert (logits[~ok] == NEG).all()
    # the correction is trainable: one gradient step moves the scores
    opt = torch.optim.SGD([p for p in pol.parameters() if p.requires_grad], lr=0.1)
    loss = -(logits[ok] * torch.linspace(-1, 1, int(ok.sum()))).sum()
    loss.backward()
    opt.step()
    with torch.no_grad():
        after, _ = pol(cand, cm, hist, hl, hm, t)
    assert not torch.allclose(after[ok], logits[ok].detach(), atol=1e-4)
    for bad in (
        {"prior": True},
        {"predictor_head": "gp"},
        {"predictor_head": "gp", "prior": True, "use_history": False},
    ):
        with pytest.raises(ValueError, match="anchor needs"):
            PolicyConfig(anchor=True, **bad)  # type: ignore[arg-type]


def test_prior_feature_is_the_frozen_prior_logit() -> None:
    """With a prior, the policy sees what greedy-prior starts from; the prior is not trained."""
    pol = _policy(prior=True)
    cand, cm, *_ = policy_parity_cases(24, seed=5)[1]
    feats = pol.prior_features(cand, cm)
    want = cand @ torch.linspace(-1.0, 1.0, 24) + 0.5
    assert torch.allclose(feats[..., 0], want, atol=1e-5)
    # the second feature ranks the available candidates as the first does, centred on them
    ok = cm[0] > 0.5
    assert torch.equal(feats[0, ok, 1].argsort(), want[0, ok].argsort())
    assert abs(float(feats[0, ok, 1].mean())) < 1e-4
    # a buffer, saved with the weights and never trained
    names = dict(pol.named_buffers())
    assert {"prior_w", "prior_b"} <= set(names)
    assert all("prior" not in n for n, _ in pol.named_parameters())
    # changing the prior changes the scores of a policy with history off, too
    off = _policy(use_history=False, prior=True)
    a = off(*policy_parity_cases(24, seed=5)[1])[0]
    off.set_prior(-torch.linspace(-1.0, 1.0, 24), 0.5)
    b = off(*policy_parity_cases(24, seed=5)[1])[0]
    assert not torch.allclose(a, b)
    with pytest.raises(ConfigError, match="24-d"):
        off.set_prior(torch.zeros(5), 0.0)
    with pytest.raises(ConfigError, match="without a prior"):
        _policy().set_prior(torch.zeros(24), 0.0)


def test_predictor_head_feature_is_the_heads_adapted_logit() -> None:
    """With a head, the policy sees exactly what the greedy baseline ranks by."""
    from metascreen.models.learners.registry import build_head

    pol = _policy(head="protonet")
    cand, cm, hist, hl, hm, _ = policy_parity_cases(24, seed=5)[1]
    hl[1] = torch.tensor([1.0, 0.0] * (hl.shape[1] // 2) + [1.0] * (hl.shape[1] % 2))
    hm[1] = 1.0
    feats = pol.head_features(cand, cm, hist, hl, hm)
    ref = build_head("protonet").head(hist[1], hl[1], cand[1])
    assert torch.allclose(feats[1, :, 0], ref, atol=1e-5)
    assert (feats[1, :, 2] == 1.0).all()
    assert (feats[0] == 0).all()  # empty history: nothing known, all zero


def _toy(n_tasks: int, seed: int) -> tuple[np.ndarray, list[Task]]:
    # actives cluster around a task-specific anchor with the same marginal spread as inactives,
    # so nothing about an item alone says it is active: only similarity to found actives helps
    rng = np.random.default_rng(seed)
    rows, tasks = [], []
    for i in range(n_tasks):
        y = (rng.random(60) < 0.4).astype(np.float32)
        anchor = rng.normal(size=24)
        x = rng.normal(size=(60, 24))
        x[y > 0.5] = 0.85 * anchor + np.sqrt(1 - 0.85**2) * x[y > 0.5]
        tasks.append(Task(f"T{i}", np.arange(60 * i, 60 * (i + 1)), y))
        rows.append(x)
    return np.concatenate(rows).astype(np.float32), tasks


def _train(
    cfg: PolicyTrainConfig,
    run_dir: Path,
    emb: np.ndarray,
    tasks: list[Task],
    valid: tuple[np.ndarray, list[Task]] | None = None,
    sampler: PoolSampler | None = None,
) -> tuple[ScreeningPolicy, PolicyTrainResult]:
    """A small policy, seeded the same every time, trained by ``train_policy`` in ``run_dir``."""
    torch.manual_seed(0)
    pol = ScreeningPolicy(24, PolicyConfig(d_model=16, heads=2))
    v_emb, v_tasks = valid if valid is not None else (None, [])
    res = train_policy(
        pol, emb, tasks, v_emb, v_tasks, cfg, run_dir, progress=False, sample_pools=sampler
    )
    return pol, res


def test_training_is_seeded_resumes_and_learns(tmp_path: Path) -> None:
    emb, tasks = _toy(12, 0)
    v_emb, v_tasks = _toy(4, 1)
    cfg = PolicyTrainConfig(
        warm_steps=30,
        rl_steps=6,
        pools_per_step=8,
        lr=3e-3,
        warmup_steps=0,
        budget=8,
        max_pool=48,
        eval_every=12,
        valid_repeats=1,
        device="cpu",
    )

    def run(d: Path, c: PolicyTrainConfig = cfg) -> tuple[ScreeningPolicy, PolicyTrainResult]:
        return _train(c, d, emb, tasks, (v_emb, v_tasks))

    a, res_a = run(tmp_path / "a")
    b, res_b = run(tmp_path / "b")
    assert res_a.best_score == res_b.best_score
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k
    # stop after 24 steps, then resume to the end: same weights as the uninterrupted run
    run(tmp_path / "c", cfg.model_copy(update={"warm_steps": 24, "rl_steps": 0}))
    c, _ = run(tmp_path / "c")
    # the interrupted run's best state may come from an earlier eval; compare final checkpoints
    ck_a = torch.load(tmp_path / "a" / "policy_checkpoint.pt", weights_only=True)
    ck_c = torch.load(tmp_path / "c" / "policy_checkpoint.pt", weights_only=True)
    assert ck_a["step"] == ck_c["step"] == 36
    for k, v in ck_a["model"].items():
        assert torch.allclose(v, ck_c["model"][k], atol=1e-6), k
    # on separable toy tasks the trained policy beats random picking
    from metascreen.models.screening.simulator import RandomPicker, simulate
    from metascreen.models.training.policy import validate_policy

    hits = validate_policy(a, torch.as_tensor(v_emb), v_tasks, 8, (0.3,), 3)[0.3].mean_hits
    rand = simulate(RandomPicker(), v_tasks, 8, 1, 0, 0.3, 3, 0).mean_hits
    assert hits > rand + 0.5


@pytest.mark.parametrize("baseline", ["value", "greedy"])
def test_reinforce_step_survives_pools_smaller_than_the_budget(baseline: str) -> None:
    from metascreen.models.screening.simulator import Pool
    from metascreen.models.training.policy import _rl_loss

    emb = np.random.default_rng(0).normal(size=(40, 24)).astype(np.float32)
    pools = [
        Pool("small", np.arange(10), np.array([1, 0] * 5)),
        Pool("big", np.arange(10, 40), np.array([1, 0, 0] * 10)),
    ]
    pol = _policy().train()
    loss = _rl_loss(
        pol,
        torch.as_tensor(emb),
        pools,
        PolicyTrainConfig(budget=16, rl_baseline=baseline),
        np.random.default_rng(0),
        torch.device("cpu"),
    )
    loss.backward()
    assert torch.isfinite(loss)


def test_self_critical_advantage_vanishes_when_sampling_is_the_argmax() -> None:
    """Sampled and argmax episodes meet the same pools and tie seeds: a policy so peaked that its
    samples are its argmax gets zero self-critical advantage; a flat one does not."""
    from metascreen.models.screening.simulator import Pool
    from metascreen.models.training.policy import _rl_loss

    rng = np.random.default_rng(0)
    emb = rng.normal(size=(120, 24)).astype(np.float32)
    pools = [Pool(f"p{i}", np.arange(30 * i, 30 * i + 30), rng.random(30) < 0.3) for i in range(4)]
    cfg = PolicyTrainConfig(budget=8, rl_baseline="greedy")

    def advantage(pol: ScreeningPolicy) -> torch.Tensor:
        parts: dict[str, torch.Tensor] = {}
        e = torch.as_tensor(emb)
        _rl_loss(pol, e, pools, cfg, np.random.default_rng(1), torch.device("cpu"), parts)
        return parts["advantage"]

    peaked = _policy().train()
    with torch.no_grad():  # logits ~1e4 apart: sampling is the argmax
        peaked.out[-1].weight.mul_(1e5)
        peaked.sim_out.weight.mul_(1e5)
    assert torch.count_nonzero(advantage(peaked)) == 0
    flat = _policy().train()  # near-uniform logits: sampled episodes differ from the argmax
    assert torch.count_nonzero(advantage(flat)) > 0


def test_pool_sampler_hook_defaults_to_the_molecule_sampler(tmp_path: Path) -> None:
    from metascreen.models.screening.simulator import Pool
    from metascreen.models.training.policy import _sample_pools

    emb, tasks = _toy(6, 0)
    cfg = PolicyTrainConfig(
        warm_steps=6,
        rl_steps=2,
        pools_per_step=4,
        rl_pools_per_step=3,
        warmup_steps=0,
        budget=6,
        max_pool=40,
        eval_every=4,
        device="cpu",
    )
    calls: list[int] = []

    def spy(
        t: list[Task], c: PolicyTrainConfig, rng: np.random.Generator, n: int | None = None
    ) -> list[Pool]:
        pools = _sample_pools(t, c, rng, n)
        calls.append(len(pools))
        return pools

    a, _ = _train(cfg, tmp_path / "a", emb, tasks)
    b, _ = _train(cfg, tmp_path / "b", emb, tasks, sampler=spy)
    assert calls == [4] * 6 + [3] * 2
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(va, vb), k


def test_listwise_term_rewards_putting_the_remaining_actives_on_top() -> None:
    from metascreen.models.screening.simulator import BatchEnv, Pool
    from metascreen.models.training.policy import _label_loss

    pool = Pool("T", np.arange(6), np.array([1, 0, 0, 1, 0, 0], np.float32))
    env = BatchEnv([pool, Pool("U", np.arange(6), np.zeros(6, np.float32))], 4, 1, 0, [[0], [1]])
    env.step(np.array([[0], [0]]))  # the first active is found: only item 3 remains active
    dev = torch.device("cpu")
    good = torch.tensor([[0.0, 0, 0, 3, 0, 0], [0.0] * 6])
    bad = torch.tensor([[0.0, 3, 0, 0, 0, 0], [0.0] * 6])
    gap_plain = _label_loss(bad, env, dev) - _label_loss(good, env, dev)
    gap_rank = _label_loss(bad, env, dev, 1.0) - _label_loss(good, env, dev, 1.0)
    assert gap_plain > 0 and gap_rank > gap_plain + 1.0
    # picked items and a pool with no active left add nothing to the listwise term
    shifted = good.clone()
    shifted[0, 0] = 50.0
    shifted[1] = torch.arange(6.0)
    base = _label_loss(good, env, dev, 1.0) - _label_loss(good, env, dev, 0.0)
    assert torch.isclose(
        _label_loss(shifted, env, dev, 1.0) - _label_loss(shifted, env, dev, 0.0), base
    )


def test_warm_start_learning_rate_schedules() -> None:
    from metascreen.models.training.policy import _warm_lr

    const = PolicyTrainConfig(warm_steps=200, warmup_steps=10, lr=1e-3)
    cos = const.model_copy(update={"lr_schedule": "cosine"})
    assert _warm_lr(const, 0) == pytest.approx(1e-4)  # linear warm-up
    assert _warm_lr(const, 9) == _warm_lr(const, 199) == pytest.approx(1e-3)
    assert _warm_lr(cos, 9) == _warm_lr(const, 9)  # same warm-up, then decay
    lrs = [_warm_lr(cos, s) for s in range(10, 200)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:], strict=False))
    assert lrs[0] == pytest.approx(1e-3) and _warm_lr(cos, 200) == pytest.approx(1e-5)
    assert _warm_lr(cos, 105) == pytest.approx(1e-3 * (0.01 + 0.99 * 0.5), rel=1e-6)


def test_ema_weights_are_the_ones_kept_and_resume_exactly(tmp_path: Path) -> None:
    from metascreen.models.screening.simulator import Pool
    from metascreen.models.training.policy import _sample_pools

    emb, tasks = _toy(8, 0)
    cfg = PolicyTrainConfig(
        warm_steps=16,
        rl_steps=4,
        pools_per_step=4,
        rl_pools_per_step=2,
        lr=3e-3,
        warmup_steps=0,
        budget=6,
        max_pool=40,
        eval_every=5,
        device="cpu",
        lr_schedule="cosine",
        ema_decay=0.9,
    )

    def run(
        d: Path, c: PolicyTrainConfig = cfg, sampler: PoolSampler | None = None
    ) -> ScreeningPolicy:
        return _train(c, d, emb, tasks, sampler=sampler)[0]

    def crash_at_step_11(
        t: list[Task], c: PolicyTrainConfig, rng: np.random.Generator, n: int | None = None
    ) -> list[Pool]:
        calls.append(1)
        if len(calls) > 11:
            raise KeyboardInterrupt
        return _sample_pools(t, c, rng, n)

    calls: list[int] = []
    a = run(tmp_path / "a")
    ck = torch.load(tmp_path / "a" / "policy_checkpoint.pt", weights_only=True)
    assert int(ck["ema"]["n_averaged"]) == 20
    raw_differs = False
    for k, v in a.state_dict().items():
        assert torch.equal(v, ck["ema"][f"module.{k}"]), k  # returned: the average
        raw_differs |= not torch.equal(v, ck["model"][k])
    assert raw_differs  # ... which is not the last raw state
    # killed in step 11 (last checkpoint: step 10) and resumed: the same average and schedule
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", sampler=crash_at_step_11)
    assert torch.load(tmp_path / "b" / "policy_checkpoint.pt", weights_only=True)["step"] == 10
    b = run(tmp_path / "b")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.allclose(va, vb, atol=1e-6), k
    # a checkpoint written without an average cannot silently resume into one
    run(tmp_path / "c", cfg.model_copy(update={"ema_decay": None, "rl_steps": 0}))
    with pytest.raises(Exception, match="without --ema-decay"):
        run(tmp_path / "c")


def test_reinforce_can_start_from_the_best_warm_state_and_keep_the_last(tmp_path: Path) -> None:
    emb, tasks = _toy(8, 0)
    v_emb, v_tasks = _toy(3, 1)
    warm = PolicyTrainConfig(
        warm_steps=20,
        rl_steps=0,
        pools_per_step=4,
        rl_pools_per_step=2,
        lr=1e-2,
        warmup_steps=0,
        budget=6,
        max_pool=40,
        eval_every=4,
        valid_repeats=1,
        device="cpu",
        keep="best",
    )

    def run(c: PolicyTrainConfig) -> tuple[ScreeningPolicy, PolicyTrainResult]:
        return _train(c, tmp_path, emb, tasks, (v_emb, v_tasks))

    _, res = run(warm)
    ck = torch.load(tmp_path / "policy_checkpoint.pt", weights_only=True)
    assert res.best_step != 20  # the seeded run's best warm state is not its last one
    # REINFORCE with a negligible learning rate from the best warm state, keeping the last state:
    # what comes back is (up to that learning rate) the best warm state, not the last one
    pol, res = run(
        warm.model_copy(update={"rl_steps": 4, "rl_lr": 1e-12, "rl_from": "best", "keep": "last"})
    )
    assert res.best_step == res.steps_done == 24
    final = torch.load(tmp_path / "policy_checkpoint.pt", weights_only=True)["model"]
    moved = False
    for k, v in pol.state_dict().items():
        assert torch.equal(v, final[k]), k  # keep="last": the last state
        assert torch.allclose(v, ck["best_model"][k], atol=1e-6), k
        moved |= not torch.allclose(ck["model"][k], ck["best_model"][k], atol=1e-4)
    assert moved  # best and last warm states differ, so the check above means something

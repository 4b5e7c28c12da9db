from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from metascreen.domains.episodes import Task
from metascreen.models.evaluation.molecules import evaluate_tasks
from metascreen.models.learners.registry import LearnerConfig, build_learner
from metascreen.models.nn.encoders import EncoderConfig
from metascreen.models.training.loop import TrainConfig, meta_train, torch_predict_fn
from metascreen.models.training.seeding import seed_everything

pytestmark = pytest.mark.unit


def _separable_tasks(n_tasks: int, seed: int, dim: int = 12) -> tuple[list[Task], np.ndarray]:
    """Each task: label = sign of a task-specific pair of the first 4 features (learnable across tasks)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n_tasks * 40, dim)).astype(np.float32)
    tasks = []
    for t in range(n_tasks):
        rows = np.arange(t * 40, t * 40 + 40)
        j = t % 4
        tasks.append(Task(f"T{t}", rows, (x[rows, j] > 0).astype(np.float32)))
    return tasks, x


def _train_small(
    train: list[Task],
    x_train: np.ndarray,
    run_dir: Path,
    steps: int,
    learner: str = "protonet",
    result: list[Any] | None = None,
    **cfg: Any,
) -> torch.Tensor:
    """Seed 0, a small encoder, ``steps`` steps of 4 episodes (8 + 16 rows), checkpoints every 10
    steps in ``run_dir`` (so a rerun resumes); the trained weights as one flat tensor
    (``meta_train``'s result is appended to ``result`` when given)."""
    seed_everything(0)
    model = build_learner(
        LearnerConfig(encoder=EncoderConfig(hidden=(16,), out_dim=8), learner=learner), 12
    )
    config = TrainConfig(
        steps=steps,
        tasks_per_step=4,
        support_sizes=(8,),
        query_size=16,
        checkpoint_every=10,
        device="cpu",
        **cfg,
    )
    res = meta_train(model, train, x_train, [], x_train, config, run_dir, progress=False)
    if result is not None:
        result.append(res)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


@pytest.mark.parametrize(
    "name", ["protonet", "maml", "matching", "gp", "multihead", "gp:per-task", "context"]
)
def test_meta_training_learns_a_separable_family(name: str, tmp_path) -> None:
    train, x_train = _separable_tasks(40, 0)
    valid, x_valid = _separable_tasks(8, 1)
    learner_name, _, kernel = name.partition(":")
    cfg = LearnerConfig(
        learner=learner_name,  # type: ignore[arg-type]
        encoder=EncoderConfig(hidden=(32,), out_dim=16, dropout=0.0, input_dropout=0.0),
        gp_kernel=kernel or "global",  # type: ignore[arg-type]
    )
    learner = build_learner(cfg, 12)
    before = evaluate_tasks(valid, x_valid, torch_predict_fn(learner), 8, 3, 0).mean
    meta_train(
        learner,
        train,
        x_train,
        valid,
        x_valid,
        TrainConfig(
            steps=150,
            tasks_per_step=8,
            support_sizes=(8,),
            query_size=16,
            lr=3e-3,
            eval_every=50,
            device="cpu",
        ),
        tmp_path,
        progress=False,
    )
    after = evaluate_tasks(valid, x_valid, torch_predict_fn(learner), 8, 3, 0).mean
    assert after > 0.25, (before, after)
    assert after > before + 0.05


@pytest.mark.parametrize(
    "name", ["protonet", "matching", "gp", "multihead", "gp:per-task", "context"]
)
def test_batched_episode_loss_is_the_mean_of_the_episode_losses(name: str) -> None:
    """Mixed support and query sizes, padded: the batched loss and its gradient are the mean of
    the per-episode ones."""
    from metascreen.domains.molecules.tasks import TrainingEpisodeSampler
    from metascreen.models.training.loop import episode_loss, pad_episodes

    learner_name, _, kernel = name.partition(":")
    seed_everything(0)
    learner = build_learner(
        LearnerConfig(
            learner=learner_name,  # type: ignore[arg-type]
            encoder=EncoderConfig(hidden=(32,), out_dim=16),
            gp_kernel=kernel or "global",  # type: ignore[arg-type]
        ),
        12,
    ).eval()  # no dropout: both paths see the same function
    if learner_name == "context":
        from tests.unit.test_export import _wake_context

        _wake_context(learner)
    assert learner.batched_training
    tasks, x = _separable_tasks(6, 0)
    x_t = torch.as_tensor(x)
    episodes = [
        TrainingEpisodeSampler(n, q).sample(t, seed=i)
        for i, (t, n, q) in enumerate(
            zip(tasks, [8, 4, 8, 6, 8, 4], [16, 16, 30, 5, 16, 9], strict=True)
        )
    ]
    assert len({len(ep.query_items) for ep in episodes}) > 1

    def grads(loss: torch.Tensor) -> list[torch.Tensor]:
        learner.zero_grad()
        loss.backward()
        return [p.grad.clone() for p in learner.parameters() if p.grad is not None]

    want = torch.stack([episode_loss(learner, ep, x_t) for ep in episodes]).mean()
    want_g = grads(want)
    got = learner.batched_episode_loss(*pad_episodes(episodes, x_t))
    got_g = grads(got)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    for a, b in zip(got_g, want_g, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_batched_and_one_at_a_time_training_reach_the_same_weights(tmp_path) -> None:
    """Without dropout the two paths of the loop train the same function to float precision."""
    train, x_train = _separable_tasks(20, 0)
    outs = []
    for batched in (True, False):
        seed_everything(0)
        learner = build_learner(
            LearnerConfig(
                encoder=EncoderConfig(hidden=(16,), out_dim=8, dropout=0.0, input_dropout=0.0),
                learner="multihead",
            ),
            12,
        )
        cfg = TrainConfig(
            steps=15,
            tasks_per_step=4,
            support_sizes=(8, 4),
            query_size=16,
            device="cpu",
            batched_episodes=batched,
        )
        meta_train(
            learner, train, x_train, [], x_train, cfg, tmp_path / str(batched), progress=False
        )
        outs.append(torch.cat([p.detach().flatten() for p in learner.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-4, atol=1e-5)


def test_same_seed_same_result_on_cpu(tmp_path) -> None:
    train, x_train = _separable_tasks(20, 0)
    cfg = TrainConfig(
        steps=20,
        tasks_per_step=4,
        support_sizes=(8,),
        query_size=16,
        eval_every=10,
        device="cpu",
        seed=3,
    )
    outs = []
    for k in range(2):
        seed_everything(3)
        learner = build_learner(LearnerConfig(encoder=EncoderConfig(hidden=(16,), out_dim=8)), 12)
        torch.manual_seed(123)  # seed_everything inside meta_train must override this
        meta_train(
            learner, train, x_train, train[:4], x_train, cfg, tmp_path / str(k), progress=False
        )
        outs.append(torch.cat([p.detach().flatten() for p in learner.parameters()]))
    torch.testing.assert_close(outs[0], outs[1], rtol=0, atol=0)


def test_resume_continues_from_checkpoint(tmp_path) -> None:
    train, x_train = _separable_tasks(20, 0)
    full = _train_small(train, x_train, tmp_path / "a", 20)
    _train_small(train, x_train, tmp_path / "b", 10)  # stops after the step-10 checkpoint
    res: list[Any] = []
    resumed = _train_small(train, x_train, tmp_path / "b", 20, result=res)
    assert res[0].steps_done == 20
    torch.testing.assert_close(full, resumed)


def test_weight_ema_is_what_training_returns_and_resumes(tmp_path) -> None:
    train, x_train = _separable_tasks(20, 0)

    def run(steps: int, folder: str, ema: float | None) -> torch.Tensor:
        return _train_small(train, x_train, tmp_path / folder, steps, ema_decay=ema)

    plain = run(20, "plain", None)
    averaged = run(20, "ema", 0.9)
    assert not torch.allclose(plain, averaged, atol=1e-4)  # the average, not the last weights
    torch.testing.assert_close(run(20, "ema0", 1e-9), plain)  # no memory: the last weights
    run(10, "resumed", 0.9)
    torch.testing.assert_close(run(20, "resumed", 0.9), averaged)


def test_anil_adaptation_lowers_support_loss() -> None:
    torch.manual_seed(0)
    learner = build_learner(
        LearnerConfig(learner="maml", encoder=EncoderConfig(hidden=(16,), out_dim=8)), 6
    ).eval()
    sx, sy = torch.randn(20, 6), (torch.rand(20) > 0.5).float()
    emb = learner.embed(sx)
    from metascreen.models.learners.base import linear_head_steps

    w, b = linear_head_steps(
        emb, sy, learner.w0, learner.b0, learner.log_lrs.exp(), learner.log_l2.exp()
    )
    loss = torch.nn.functional.binary_cross_entropy_with_logits
    assert loss((emb * w).sum(-1) + b, sy) < loss((emb * learner.w0).sum(-1) + learner.b0, sy)


def test_conjugate_gradient_matches_solve() -> None:
    from metascreen.models.learners.gp import conjugate_gradient

    g = torch.Generator().manual_seed(0)
    m = torch.randn(30, 30, generator=g)
    a = m @ m.t() / 30 + 0.3 * torch.eye(30)
    b = torch.randn(30, 1, generator=g)
    torch.testing.assert_close(
        conjugate_gradient(a, b, 60), torch.linalg.solve(a, b), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("name", ["protonet", "gp", "multihead", "maml", "context"])
def test_cached_embeddings_give_the_same_evaluation(name: str) -> None:
    from metascreen.models.training.loop import TorchEvaluator

    tasks, x = _separable_tasks(6, 2)
    seed_everything(0)
    learner = build_learner(
        LearnerConfig(learner=name, encoder=EncoderConfig(hidden=(16,), out_dim=8)), 12
    )
    ev = TorchEvaluator(learner)
    assert ev.cached
    cached = ev.evaluate(tasks, x, 8, 3)
    plain = evaluate_tasks(tasks, x, torch_predict_fn(learner), 8, 3, 0)
    assert cached.per_task == pytest.approx(plain.per_task, abs=1e-6)
    assert (cached.n_draws, cached.n_skipped_draws) == (plain.n_draws, plain.n_skipped_draws)


def test_cosine_schedule_warms_up_and_decays() -> None:
    from metascreen.models.training.loop import lr_at

    cfg = TrainConfig(steps=1000, lr=1e-3, lr_schedule="cosine", warmup_steps=100)
    assert lr_at(0, cfg) == pytest.approx(1e-5)
    assert lr_at(99, cfg) == pytest.approx(1e-3)
    assert lr_at(550, cfg) < lr_at(200, cfg)
    assert lr_at(1000, cfg) == pytest.approx(1e-4)
    assert lr_at(500, TrainConfig(lr=2e-4)) == 2e-4


@pytest.mark.parametrize("name", ["protonet", "matching", "gp", "multihead", "gp:per-task"])
def test_batched_head_matches_the_head_on_each_unpadded_support(name: str) -> None:
    from metascreen.models.learners.registry import build_head

    learner_name, _, kernel = name.partition(":")
    head = build_head(learner_name, kernel or "global").eval()
    gen = torch.Generator().manual_seed(3)
    b, s, q, e = 4, 9, 7, 16
    sup = torch.randn(b, s, e, generator=gen)
    y = (torch.rand(b, s, generator=gen) < 0.5).float()
    mask = torch.ones(b, s)
    mask[1, 6:] = 0.0  # padded
    y[2] = 1.0  # one class only
    mask[3, 2:] = 0.0
    qry = torch.randn(b, q, e, generator=gen)
    with torch.no_grad():
        got = head.batched_head(sup, y, mask, qry)
        for i in range(b):
            keep = mask[i] > 0.5
            want = head.head(sup[i][keep], y[i][keep], qry[i])
            assert torch.allclose(got[i], want, atol=1e-4), (name, i)


def test_cg_inverse_matches_torch_inverse() -> None:
    from metascreen.models.learners.gp import batched_cg_inverse

    g = torch.Generator().manual_seed(1)
    m = torch.randn(2, 3, 24, 24, generator=g)
    a = m @ m.transpose(-1, -2) / 24 + 0.3 * torch.eye(24)
    torch.testing.assert_close(batched_cg_inverse(a, 60), torch.linalg.inv(a), rtol=1e-4, atol=1e-4)


def test_per_task_kernel_prefers_the_lengthscale_the_support_supports() -> None:
    """LOO weights move to short lengthscales on rough labels and long ones on smooth labels."""
    from metascreen.models.learners.gp import PerTaskGPLearner

    head = PerTaskGPLearner(torch.nn.Identity()).eval()
    angles = torch.linspace(0, 3.0, 32)
    emb = torch.stack([torch.cos(angles), torch.sin(angles)], dim=1).unsqueeze(0)  # (1, 32, 2)
    mask = torch.ones(1, 32)
    smooth = (angles < 1.5).float().unsqueeze(0)  # one boundary
    rough = ((angles * 2).floor() % 2).float().unsqueeze(0)  # six alternating blocks

    with torch.no_grad():
        w_rough = head.lengthscale_weights(emb, rough, mask)[0]
        w_smooth = head.lengthscale_weights(emb, smooth, mask)[0]
    grid = head.log_grid
    assert float((w_rough * grid).sum()) < float((w_smooth * grid).sum()) - 0.1


def test_context_batched_head_matches_the_head_and_queries_stay_independent() -> None:
    from tests.unit.test_export import _wake_context

    seed_everything(0)
    learner = build_learner(
        LearnerConfig(learner="context", encoder=EncoderConfig(hidden=(16,), out_dim=16)), 12
    ).eval()
    _wake_context(learner)
    gen = torch.Generator().manual_seed(3)
    b, s, q, e = 3, 9, 7, 16
    sup = torch.randn(b, s, e, generator=gen)
    y = (torch.rand(b, s, generator=gen) < 0.5).float()
    mask = torch.ones(b, s)
    mask[1, 6:] = 0.0
    mask[2, 3:] = 0.0
    qry = torch.randn(b, q, e, generator=gen)
    with torch.no_grad():
        got = learner.batched_head(sup, y, mask, qry)
        plain = ContextFree(learner)
        for i in range(b):
            keep = mask[i] > 0.5
            want = learner.head(sup[i][keep], y[i][keep], qry[i])
            assert torch.allclose(got[i], want, atol=1e-4), i
            # One query scored alone gets the score it gets among the others.
            alone = learner.head(sup[i][keep], y[i][keep], qry[i][:1])
            assert torch.allclose(alone, want[:1], atol=1e-5)
            # The stage is not the identity once its projections are non-zero.
            assert not torch.allclose(plain.head(sup[i][keep], y[i][keep], qry[i]), want)


def test_context_references_are_encoded_by_the_shared_encoder_and_saved() -> None:
    """With ``context_refs`` the Hopfield stage retrieves from encoder(reference features)."""
    from tests.unit.test_export import _wake_context

    seed_everything(0)
    cfg = LearnerConfig(
        learner="context", encoder=EncoderConfig(hidden=(16,), out_dim=16), context_refs=10
    )
    with pytest.raises(ValueError, match="context_refs is an option of the context learner"):
        LearnerConfig(learner="multihead", context_refs=10)
    learner = build_learner(cfg, 12).eval()
    assert not hasattr(learner.context, "patterns_k")  # no learned patterns in this mode
    with pytest.raises(ValueError, match="shape"):
        learner.set_references(torch.rand(9, 12))  # type: ignore[operator]
    gen = torch.Generator().manual_seed(4)
    refs = torch.rand(10, 12, generator=gen)
    learner.set_references(refs)  # type: ignore[operator]
    _wake_context(learner)
    sx, qx = torch.rand(8, 12, generator=gen), torch.rand(5, 12, generator=gen)
    sy = torch.tensor([1.0, 0, 1, 0, 1, 0, 0, 0])
    with torch.no_grad():
        before = learner(sx, sy, qx)
        # Other references give other scores: the stage reads them ...
        learner.set_references(torch.rand(10, 12, generator=gen))  # type: ignore[operator]
        assert not torch.allclose(learner(sx, sy, qx), before)
        learner.set_references(refs)  # type: ignore[operator]
        # ... saved with the weights ...
        copy = build_learner(cfg, 12).eval()
        copy.load_state_dict(learner.state_dict())  # the references travel in the weights
        torch.testing.assert_close(copy(sx, sy, qx), before)
        # ... and embedded by the learner's own (shared) encoder.
        ref_emb = learner.encoder(refs)
        torch.testing.assert_close(learner._ref_emb(), ref_emb)
        k, _ = learner.context.memory(ref_emb)
        torch.testing.assert_close(k, learner.context.ref_k(learner.context.norm_ref(ref_emb)))


class ContextFree:
    """The same heads without the context stage."""

    def __init__(self, learner: torch.nn.Module) -> None:
        from metascreen.models.learners.multihead import MultiHeadLearner

        self.learner = learner
        self.base = MultiHeadLearner.head_logits

    def head(self, s: torch.Tensor, y: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        from metascreen.models.learners.base import mean_probability_logit

        return mean_probability_logit(self.base(self.learner, s, y, q))  # type: ignore[arg-type]


def test_older_checkpoints_resume_with_the_selection_key() -> None:
    from metascreen.models.training.loop import HISTORY_RENAMED, history_fields, history_from

    old = history_fields(
        [{"step": 250, "loss": 0.6, "valid": 0.25, "valid_f1": 24.0}],
        ["step", "loss", "valid", "valid_f1"],
    )
    (rec,) = history_from(old, HISTORY_RENAMED)
    assert rec == {"step": 250.0, "loss": 0.6, "selection": 0.25, "selection_f1": 24.0}


def test_multitask_heads_score_every_row_with_its_own_task_head() -> None:
    from metascreen.models.training.loop import MultitaskHeads

    heads = MultitaskHeads(5, 3)
    torch.nn.init.normal_(heads.table.weight)
    g = torch.Generator().manual_seed(0)
    se, qe = torch.randn(2, 4, 3, generator=g), torch.randn(2, 6, 3, generator=g)
    sy, qy = (
        (torch.rand(2, 4, generator=g) > 0.5).float(),
        (torch.rand(2, 6, generator=g) > 0.5).float(),
    )
    sm, qm = torch.ones(2, 4), torch.ones(2, 6)
    sm[1, 3] = 0.0  # a padded support row and two padded query rows of the second episode
    qm[1, 4:] = 0.0
    ids = torch.tensor([4, 1])
    got = heads.loss(ids, se, sy, sm, qe, qy, qm)
    want = []
    for b, t in enumerate(ids.tolist()):
        rows = torch.cat([se[b][sm[b] > 0], qe[b][qm[b] > 0]])
        y = torch.cat([sy[b][sm[b] > 0], qy[b][qm[b] > 0]])
        w = heads.table.weight[t]
        z = rows @ w[:-1] + w[-1]
        want.append(torch.nn.functional.binary_cross_entropy_with_logits(z, y))
    torch.testing.assert_close(got, torch.stack(want).mean())


def test_multitask_loss_trains_task_heads_and_resumes(tmp_path) -> None:
    from metascreen.domains.errors import ConfigError

    train, x_train = _separable_tasks(20, 0)

    def run(steps: int, folder: str, weight: float, batched: bool = True) -> torch.Tensor:
        return _train_small(
            train,
            x_train,
            tmp_path / folder,
            steps,
            learner="multihead",
            multitask_weight=weight,
            batched_episodes=batched,
        )

    plain = run(20, "plain", 0.0)
    with_heads = run(20, "mt", 1.0)
    assert not torch.allclose(
        plain, with_heads, atol=1e-4
    )  # the auxiliary loss reaches the encoder
    ckpt = torch.load(tmp_path / "mt" / "checkpoint.pt", weights_only=True)
    heads = ckpt["multitask"]["table.weight"]
    assert heads.shape == (20, 9)
    assert int((heads.abs().sum(1) > 0).sum()) >= 10  # the heads of the tasks drawn moved
    run(10, "resumed", 1.0)
    torch.testing.assert_close(run(20, "resumed", 1.0), with_heads)
    with pytest.raises(ConfigError, match="batched episodes"):
        run(2, "sequential", 1.0, batched=False)
    with pytest.raises(ConfigError, match="without the multitask loss"):
        run(20, "plain", 1.0)  # a plain run's checkpoint cannot resume with heads

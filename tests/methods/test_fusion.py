import pytest
import torch

from methods.features import FeatureCache
from methods.base import FitContext, FittedMember, Prediction
from methods.cell import CellSetting, fit_method
from methods.fusion import Fusion, FusionConfig
from methods.base import MethodVariant
from methods.registry import build_variant


def _setting(seed=0):
    return CellSetting("toy", seed, torch.device("cpu"), FeatureCache(torch.device("cpu")))


def _context(fitted=None):
    """A fit context whose members are already-fitted instances (spies), recorded as the cell would."""
    bare = FitContext(torch.device("cpu"), torch.Generator().manual_seed(0), FeatureCache(torch.device("cpu")))
    members = {spec: FittedMember(build_variant(method.name), method, bare) for spec, method in (fitted or {}).items()}
    return FitContext(bare.device, bare.generator, bare.features, members=members)


class Spy:
    """A training-free member that records every image it scores; score = mean intensity (or a constant)."""

    name = "patchcore"  # registered as training-free: fusion uses leave-one-out for it
    config = None

    def __init__(self, constant: float | None = None):
        self.seen: list[torch.Tensor] = []
        self.constant = constant

    def fit(self, support, *, category, context):
        pass

    def predict(self, images):
        self.seen.extend(images)
        scores = images.mean(dim=(1, 2, 3)) if self.constant is None else torch.full((len(images),), self.constant)
        return Prediction(scores=scores, maps=None)


def test_statistics_come_from_the_support_set_only():
    support = torch.rand(1, 3, 32, 32)
    test = torch.rand(4, 3, 32, 32) + 5.0  # far outside the support's range
    spy = Spy()
    fusion = Fusion(FusionConfig())
    fusion.fit(support, category="toy", context=_context({"patchcore": spy}))
    stats = fusion.score_stats["patchcore"]
    assert all(float(image.max()) <= 1.0 for image in spy.seen)  # only (views of) support images were scored
    fusion.predict(test)
    assert fusion.score_stats["patchcore"] == stats  # predicting the test set leaves the statistics alone
    assert stats.mean < 1.0


def test_constant_member_scores_do_not_divide_by_zero():
    fusion = Fusion(FusionConfig())
    fusion.fit(torch.rand(1, 3, 16, 16), category="toy", context=_context({"patchcore": Spy(constant=3.0)}))
    z = fusion.predict(torch.rand(3, 3, 16, 16)).scores
    assert torch.isfinite(z).all() and torch.allclose(z, torch.zeros(3))
    assert float(fusion.score_stats["patchcore"].scale) == 1.0  # constant scores: shifted only


@pytest.mark.parametrize("loo_views", [0, 3])
def test_leave_one_out_statistics_of_a_training_free_member(loo_views):
    torch.manual_seed(0)
    support = torch.rand(3, 3, 64, 64)
    setting = _setting()
    member = fit_method(build_variant("patchcore"), support, setting)
    spec = f"fusion:scale=held_out,loo_views={loo_views},loo_views_max_k=3,distance_floor=0"
    fusion = fit_method(build_variant(spec), support, setting, {"patchcore": member}).method
    held_out_scores = []
    for held_out in range(3):
        fresh = fit_method(build_variant("patchcore"), torch.cat([support[:held_out], support[held_out + 1:]]), setting)
        held_out_scores.append(float(fresh.method.predict(support[held_out:held_out + 1]).scores))
    assert fusion.holdout_used["patchcore"] == "leave-one-out"
    if loo_views == 0:  # exactly the mean and the sample std (ddof 1) of the k held-out images' scores
        assert fusion.score_stats["patchcore"].mean == pytest.approx(sum(held_out_scores) / 3, rel=1e-5)
        expected = torch.tensor(held_out_scores, dtype=torch.float64).std(correction=1)
        assert float(fusion.score_stats["patchcore"].scale) == pytest.approx(float(expected), rel=1e-4)
    else:  # the views move the statistics away from the k scores alone
        assert fusion.score_stats["patchcore"].mean != pytest.approx(sum(held_out_scores) / 3, rel=1e-5)
    prediction = fusion.predict(support[:2])
    assert prediction.maps.shape == (2, 64, 64) and "z_patchcore" in prediction.extras


def test_holdout_views_never_flip():
    from methods.fusion import HOLDOUT_VIEWS
    assert HOLDOUT_VIEWS.hflip_p == 0 and HOLDOUT_VIEWS.vflip_p == 0  # a flip swaps slots: a logical anomaly


def test_a_named_member_must_have_been_fitted():
    fusion = Fusion(FusionConfig(members=("simplenet",)))
    with pytest.raises(RuntimeError, match="member 'simplenet' is not among the members in this run"):
        fusion.fit(torch.rand(2, 3, 16, 16), category="toy", context=_context({"patchcore": Spy()}))


def test_combine_of_member_predictions_equals_predict():
    members = {"patchcore": Spy(), "clip_logic": Spy()}
    members["clip_logic"].name = "clip_logic"
    fusion = Fusion(FusionConfig(weights=(1.0, 0.5)))
    fusion.fit(torch.rand(1, 3, 16, 16), category="toy", context=_context(members))  # k=1: views, no refit
    test = torch.rand(5, 3, 16, 16)
    combined = fusion.combine({spec: member.predict(test) for spec, member in members.items()})
    direct = fusion.predict(test)
    assert torch.allclose(combined.scores, direct.scores)
    expected = fusion.score_stats["patchcore"](test.mean(dim=(1, 2, 3))) \
        + 0.5 * fusion.score_stats["clip_logic"](test.mean(dim=(1, 2, 3)))
    assert torch.allclose(combined.scores, expected)


def test_refits_see_the_context_the_member_was_fitted_with():
    from types import SimpleNamespace

    seen = []

    class Recorder(Spy):
        def fit(self, support, *, category, context):
            seen.append((context.auxiliary, context.artifacts))

    entry = SimpleNamespace(name="regad", trains=True, cheap_fit=False, needs_fitted=False, distance_scores=False,
                            factory=lambda config: Recorder())
    auxiliary = lambda: []  # noqa: E731  (what the runner hands RegAD)
    member_context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(1), FeatureCache(torch.device("cpu")),
                                auxiliary=auxiliary, artifacts=None)
    variant = MethodVariant("regad", entry, None)
    member = FittedMember(variant, Recorder(), member_context)
    context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(0), FeatureCache(torch.device("cpu")),
                         members={"regad": member})
    Fusion(FusionConfig(holdout="refit", trained_members=True)).fit(torch.rand(3, 3, 16, 16), category="toy",
                                                                  context=context)
    assert len(seen) == 3 and all(aux is auxiliary for aux, _ in seen)  # k refits, each with the member's auxiliary


def test_separation_and_pseudo_weights_by_hand():
    from methods.fusion import pseudo_weights, separation
    normal = torch.tensor([0.0, 1.0, 2.0])
    assert separation(normal, torch.tensor([3.0, 4.0])) == 1.0
    assert separation(normal, torch.tensor([1.0])) == pytest.approx((1 + 0.5) / 3)  # one below, one tie
    assert separation(normal, torch.tensor([-1.0])) == 0.0
    weights = pseudo_weights({"a": 1.0, "b": 0.75, "c": 0.4})  # 0.5, 0.25, 0 -> scaled to sum to 3
    assert weights == pytest.approx({"a": 2.0, "b": 1.0, "c": 0.0})
    assert pseudo_weights({"a": 0.5, "b": 0.2}) == {"a": 1.0, "b": 1.0}  # nobody separates: equal


class Bright(Spy):
    """A member that sees pasted regions: score = the largest pixel-to-neighbour jump."""

    def predict(self, images):
        self.seen.extend(images)
        jumps = (images[..., 1:] - images[..., :-1]).abs().amax(dim=(1, 2, 3))
        return Prediction(scores=jumps, maps=None)


def test_pseudo_weighting_favours_the_member_that_sees_pseudo_anomalies_and_keeps_the_statistics():
    ramp = torch.linspace(0.1, 0.9, 32)  # a smooth ramp: a region pasted elsewhere makes a jump
    support = (ramp[None, :] + ramp[:, None]).div(2).expand(1, 3, 32, 32).clone()  # k = 1: views, no refits
    blind, seeing = Spy(constant=1.0), Bright()
    blind.name, seeing.name = "patchcore", "clip_logic"
    members = {"patchcore": blind, "clip_logic": seeing}
    equal = Fusion(FusionConfig(weighting="equal"))
    equal.fit(support, category="toy", context=_context(members))
    pseudo = Fusion(FusionConfig(weighting="pseudo"))
    pseudo.fit(support, category="toy", context=_context(members))
    assert pseudo.separations["patchcore"] == 0.5 and pseudo.separations["clip_logic"] > 0.8
    assert pseudo.weights == {"patchcore": 0.0, "clip_logic": 2.0}
    assert equal.weights == {"patchcore": 1.0, "clip_logic": 1.0} and not equal.separations
    for spec in members:  # the weighting never changes the held-out statistics
        assert equal.score_stats[spec] .mean == pseudo.score_stats[spec].mean
    assert pseudo.info()["weights_used"] == {"patchcore": 0.0, "clip_logic": 2.0}


def test_a_member_with_a_cheap_fit_is_left_out_in_turn_even_if_it_trains():
    from types import SimpleNamespace

    entry = SimpleNamespace(name="regad", trains=True, cheap_fit=True, needs_fitted=False, distance_scores=False,
                            factory=lambda config: Spy())
    member = FittedMember(MethodVariant("regad", entry, None), Spy(), _context().__class__(
        torch.device("cpu"), torch.Generator().manual_seed(1), FeatureCache(torch.device("cpu"))))
    context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(0), FeatureCache(torch.device("cpu")),
                         members={"regad": member})
    fusion = Fusion(FusionConfig())
    fusion.fit(torch.rand(3, 3, 16, 16), category="toy", context=context)
    assert fusion.holdout_used["regad"] == "leave-one-out"


def test_an_exact_member_spec_picks_that_variant_only():
    members = {"patchcore": Spy(), "patchcore:num_neighbors=3": Spy()}
    fusion = Fusion(FusionConfig(members=("patchcore",)))
    fusion.fit(torch.rand(1, 3, 16, 16), category="toy", context=_context(members))
    assert list(fusion.members) == ["patchcore"]


def test_trained_members_join_only_when_asked_or_named():
    from types import SimpleNamespace

    def member(name, cheap):
        entry = SimpleNamespace(name=name, trains=not cheap, cheap_fit=cheap, needs_fitted=False, distance_scores=False,
                                factory=lambda config: Spy())
        return FittedMember(MethodVariant(name, entry, None), Spy(), FitContext(
            torch.device("cpu"), torch.Generator().manual_seed(1), FeatureCache(torch.device("cpu"))))

    members = {"patchcore": member("patchcore", True), "gcad": member("gcad", False)}
    context = FitContext(torch.device("cpu"), torch.Generator().manual_seed(0), FeatureCache(torch.device("cpu")),
                         members=members)
    support = torch.rand(1, 3, 16, 16)
    for config, fused in ((FusionConfig(), ["patchcore"]), (FusionConfig(trained_members=True), ["patchcore", "gcad"]),
                          (FusionConfig(members=("gcad",)), ["gcad"])):
        fusion = Fusion(config)
        fusion.fit(support, category="toy", context=context)
        assert list(fusion.members) == fused
    only_trained = FitContext(context.device, context.generator, context.features, members={"gcad": members["gcad"]})
    with pytest.raises(RuntimeError, match="trained_members=true"):
        Fusion(FusionConfig()).fit(support, category="toy", context=only_trained)


def test_geomean_scale_by_hand():
    from methods.augment import augmented_views
    from methods.fusion import HOLDOUT_VIEWS
    support = torch.rand(1, 3, 32, 32)
    fusion = Fusion(FusionConfig(distance_floor=0))  # default: the geometric-mean scale (unfloored here)
    fusion.fit(support, category="toy", context=_context({"patchcore": Spy()}))
    fitted = fusion.score_stats["patchcore"]
    # by hand: the cell's stream gives the pseudo seed, then the held-out views (k = 1); the scale's views come
    # from a stream of their own seeded from the pseudo seed
    cell = torch.Generator().manual_seed(0)
    pseudo_seed = int(torch.randint(2**62, (1,), generator=cell))
    held_out = augmented_views(support, 4, HOLDOUT_VIEWS, cell).mean(dim=(1, 2, 3)).double()
    views = augmented_views(support, 4, HOLDOUT_VIEWS, torch.Generator().manual_seed(pseudo_seed + 1))
    view_scores = views.mean(dim=(1, 2, 3)).double()
    expected = (held_out.std(correction=0) * view_scores.std(correction=0)).sqrt()
    assert float(fitted.scale) == pytest.approx(float(expected), rel=1e-6)
    assert float(fitted.scale) != pytest.approx(float(held_out.std(correction=0)), rel=1e-3)
    assert float(fitted.mean) == pytest.approx(float(held_out.mean()), rel=1e-9)


def test_held_out_scale_by_hand_never_reads_views_of_a_support_the_member_saw():
    from methods.augment import augmented_views
    from methods.fusion import HOLDOUT_VIEWS
    support = torch.rand(1, 3, 32, 32)
    fusion = Fusion(FusionConfig(scale="held_out", distance_floor=0))  # sample std (ddof 1) of the held-out normals
    spy = Spy()
    fusion.fit(support, category="toy", context=_context({"patchcore": spy}))
    fitted = fusion.score_stats["patchcore"]
    cell = torch.Generator().manual_seed(0)
    int(torch.randint(2**62, (1,), generator=cell))  # the pseudo seed's draw
    held_out = augmented_views(support, 4, HOLDOUT_VIEWS, cell).mean(dim=(1, 2, 3)).double()  # k = 1: views
    assert float(fitted.scale) == pytest.approx(float(held_out.std(correction=1)), rel=1e-6)
    assert float(fitted.mean) == pytest.approx(float(held_out.mean()), rel=1e-9)
    assert len(spy.seen) == 4  # the held-out views only: no second set of views scored for the scale


class ClipSpy(Spy):
    name = "clip_logic"  # a member whose score is not a distance (no `distance_scores`)


@pytest.mark.parametrize("scale", ["geomean", "held_out"])
def test_distance_members_scale_is_floored_at_a_fraction_of_their_held_out_mean(scale):
    support = torch.rand(2, 3, 32, 32) * 0.1 + 0.45  # scores (mean intensity) near 0.5, spread far below 0.15 x 0.5
    floored = Fusion(FusionConfig(scale=scale))
    floored.fit(support, category="toy", context=_context({"patchcore": Spy(), "clip_logic": ClipSpy()}))
    plain = Fusion(FusionConfig(scale=scale, distance_floor=0))
    plain.fit(support, category="toy", context=_context({"patchcore": Spy(), "clip_logic": ClipSpy()}))
    distance, other = floored.score_stats["patchcore"], floored.score_stats["clip_logic"]
    assert float(plain.score_stats["patchcore"].scale) < 0.15 * float(distance.mean)
    assert float(distance.scale) == pytest.approx(0.15 * float(distance.mean), rel=1e-9)  # the floor
    assert float(distance.mean) == pytest.approx(float(plain.score_stats["patchcore"].mean), rel=1e-12)
    assert other == plain.score_stats["clip_logic"]  # not a distance: untouched


def test_standardiser_sample_std():
    from methods.standardise import Standardiser
    values = torch.tensor([1.0, 3.0], dtype=torch.float64)
    assert float(Standardiser.fit(values, ddof=1).scale) == pytest.approx(2 ** 0.5)
    assert float(Standardiser.fit(values).scale) == pytest.approx(1.0)  # ddof 0: |a - b| / 2
    single = Standardiser.fit(torch.tensor([5.0]), ddof=1)  # one value: no spread, shifted only
    assert float(single.scale) == 1.0 and float(single.mean) == 5.0

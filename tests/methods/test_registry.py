import pytest

from methods import list_methods
from methods.registry import MethodSpecError, build_config, create_method, parse_spec
from runfolder.schema import variant_dirname


def test_spec_parsing_and_typed_overrides():
    assert parse_spec("patchcore:num_neighbors=3,levels=1+2") == ("patchcore", {"num_neighbors": "3", "levels": "1+2"})
    _, config = build_config("patchcore:num_neighbors=3,levels=1+2,coreset_ratio=0.5", "offline")
    assert config.num_neighbors == 3 and config.levels == (1, 2) and config.coreset_ratio == 0.5
    assert config.backbone == "lite0"


def test_presets_differ_in_backbone():
    assert build_config("patchcore", "paper")[1].backbone == "wide_resnet50_2"


def test_unknown_key_names_the_valid_keys():
    with pytest.raises(MethodSpecError, match="unknown key 'neighbours'.*num_neighbors"):
        build_config("patchcore:neighbours=3", "offline")


def test_bad_value_and_malformed_pair_are_errors():
    with pytest.raises(MethodSpecError, match="num_neighbors='three' is not valid; expected an integer >= 1"):
        build_config("patchcore:num_neighbors=three", "offline")
    with pytest.raises(MethodSpecError, match="not key=value"):
        build_config("patchcore:num_neighbors", "offline")


def test_unknown_method_lists_registered_names():
    with pytest.raises(MethodSpecError, match="unknown method 'patchkore'; registered: .*patchcore"):
        create_method("patchkore")


def test_every_method_has_both_presets_and_a_summary():
    for entry in list_methods():
        assert set(entry.presets) == {"paper", "offline"} and entry.summary


def test_variant_dirname_is_filesystem_safe():
    assert variant_dirname("fusion:members=patchcore+simplenet") == "fusion_members_patchcore_simplenet"


# ------------------------------------------------------------------------------------------ option checks
@pytest.mark.parametrize("spec, message", [
    ("gcad:local_encoder=gird", "local_encoder='gird' is not valid; expected one of grid, distilled (did you mean "
                                "'grid'?)"),
    ("fusion:holdout=lo", "expected one of auto, loo, refit, augment"),
    ("regad:stn_mode=rotate", "expected one of affine, translation"),
    ("patchcore:backbone=resnet19", "expected one of lite0, wide_resnet50_2, resnet18, efficientnet_b6 (did you mean "
                                     "'resnet18'?)"),
    ("patchcore:num_neighbors=0", "num_neighbors='0' is not valid; expected an integer >= 1"),
    ("patchcore:coreset_ratio=1.5", "expected a number > 0 and <= 1"),
    ("patchcore:blur_sigma=nan", "expected a number >= 0"),
    ("patchcore:levels=1+4", "each one of 1, 2, 3"),
    ("patchcore:levels=", "a non-empty '+'-separated list"),
    ("simplenet:hflip_p=2", "expected a number in [0, 1]"),
    ("simplenet:patches_per_step=0", "expected an integer >= 1 or none"),
    ("regad:gaussian_stride=5", "gaussian_stride='5' is not valid; expected one of 4, 8, 16"),
    ("regad:normalize=maybe", "expected true or false"),
    ("regad:source=/no/such/folder", "expected procedural, dataset or the path of an existing dataset folder"),
    ("clip_logic:clip_model=ViT-Q-99", "expected an open_clip model name"),
    ("fusion:weights=1+-1", "each a number >= 0"),
])
def test_bad_option_values_name_the_option_and_what_is_valid(spec, message):
    with pytest.raises(MethodSpecError) as error:
        build_config(spec, "offline")
    text = str(error.value)
    assert text.startswith(f"{spec!r}: ") and message in text and "\n" not in text


def test_good_values_are_parsed_to_their_types(tmp_path):
    _, regad = build_config(f"regad:input_size=none,gaussian_stride=16,source={tmp_path},stn_mode=affine", "paper")
    assert regad.input_size is None and regad.gaussian_stride == 16 and regad.source == str(tmp_path)
    _, simplenet = build_config("simplenet:patches_per_step=none,hflip_p=0,train_threads=2", "offline")
    assert simplenet.patches_per_step is None and simplenet.hflip_p == 0.0 and simplenet.train_threads == 2
    _, fusion = build_config("fusion:members=patchcore+simplenet,weights=1+2,holdout=loo", "offline")
    assert fusion.members == ("patchcore", "simplenet") and fusion.weights == (1.0, 2.0) and fusion.holdout == "loo"


def test_a_key_given_twice_is_an_error():
    with pytest.raises(MethodSpecError, match="key 'num_neighbors' is given twice"):
        build_config("patchcore:num_neighbors=1,num_neighbors=2", "offline")


def test_presets_are_checked_when_a_method_registers():
    from dataclasses import dataclass

    from methods.options import PositiveInt
    from methods.registry import _REGISTRY, register

    @dataclass(frozen=True)
    class ToyConfig:
        steps: PositiveInt = 1

    with pytest.raises(MethodSpecError, match="toy preset 'offline': steps=0 is not valid; expected an integer >= 1"):
        register("toy", config=ToyConfig, presets={"paper": ToyConfig(), "offline": ToyConfig(steps=0)}, summary="x")
    assert "toy" not in _REGISTRY


def test_a_misspelt_registry_flag_fails_at_registration():
    from dataclasses import dataclass

    from methods.registry import _REGISTRY, register

    @dataclass(frozen=True)
    class ToyConfig:
        steps: int = 1

    with pytest.raises(TypeError, match="cheap_fits"):
        register("toy", config=ToyConfig, presets={"paper": ToyConfig(), "offline": ToyConfig()}, summary="x",
                 cheap_fits=True)(lambda config: None)
    assert "toy" not in _REGISTRY


def test_every_preset_passes_its_own_checks():
    from methods.registry import check_config

    for entry in list_methods():
        for preset, config in entry.presets.items():
            check_config(config, f"{entry.name} {preset}")


def test_backbone_options_are_the_known_backbones():
    import typing

    from methods.backbones import BACKBONES, BackboneName
    from methods.regad import StnMode
    from methods.regad_modules import STN_MODES

    assert set(typing.get_args(BackboneName)) == set(BACKBONES)
    assert set(typing.get_args(StnMode)) == set(STN_MODES)
    for entry in list_methods():  # every field that names a backbone is checked against the table
        hints = typing.get_type_hints(entry.config, include_extras=True)
        for name in ("backbone", "teacher"):
            if name in hints:
                assert hints[name] in (BackboneName, BackboneName | None), (entry.name, name)


def test_a_family_member_name_takes_its_options_after_a_second_colon(monkeypatch):
    """`anomalib:Patchcore:k=v`: a registered `family:member` name wins over `name:positional`."""
    from dataclasses import dataclass

    from methods import registry

    @dataclass(frozen=True)
    class Config:
        size: int = 1

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))
    registry.register("fam:member", config=Config, presets={"paper": Config(), "offline": Config()},
                      summary="a family member")(lambda config: None)
    assert parse_spec("fam:member:size=3") == ("fam:member", {"size": "3"})
    assert parse_spec("fam:member") == ("fam:member", {})
    assert build_config("fam:member:size=3", "offline")[1] == Config(3)
    assert parse_spec("vand:some/dir") == ("vand", {"": "some/dir"})  # not registered as a member: positional
    with pytest.raises(MethodSpecError, match="unknown key 'width'"):
        build_config("fam:member:width=2", "offline")

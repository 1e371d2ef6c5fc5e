import pytest

from methods import list_methods
from methods.registry import MethodSpecError, build_config, create_method, parse_spec, variant_dirname


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
    with pytest.raises(MethodSpecError, match="not a valid int"):
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

"""semscale.methods: the catalogue of training recipes, their +DSB forms, DSB pairing, and unknown names."""

import pytest
from semscale import methods
from semscale.config import TrainConfig
from semscale.methods import METHODS


def test_methods_name_what_they_are():
    assert len(METHODS) == 2 * (len(methods.BASE_METHODS) + len(methods.OTHER_METHODS)) == 18 + 20
    assert METHODS["LDAM-DRW+DSB"] == {"loss": "ldam", "reweight": "drw", "dsb": True}
    assert METHODS["CB-Focal"]["reduction"] == "mean" and METHODS["CDB-CE"]["reduction"] == "mean"
    assert "reduction" not in METHODS["CE-DRW"]  # LDAM-DRW's weighted mean, the default
    for name, fields in METHODS.items():
        TrainConfig(dataset="digits", **fields)  # every recipe is a valid config


def test_every_new_method_is_a_valid_config_with_and_without_dsb():
    for name, fields in methods.OTHER_METHODS.items():
        assert METHODS[f"{name}+DSB"] == {**fields, "dsb": True}
        TrainConfig(dataset="digits", **fields)
        TrainConfig(dataset="digits", **fields, dsb=True)


def test_with_dsb_adds_each_methods_dsb_form():
    chosen = methods.with_dsb(["CE", "CDB-CE"])
    assert list(chosen) == ["CE", "CE+DSB", "CDB-CE", "CDB-CE+DSB"]
    assert chosen["CDB-CE+DSB"] == METHODS["CDB-CE+DSB"]
    with pytest.raises(KeyError):
        methods.with_dsb(["No such method"])
    # a name already ending in +DSB is taken as is; the fields are copies, not the catalogue's own dicts
    assert list(methods.with_dsb(["LDAM+DSB"])) == ["LDAM+DSB"]
    chosen["CE"]["loss"] = "focal"
    assert METHODS["CE"] == {"loss": "ce"}
    # another catalogue, with the same unknown-name errors
    own = {"A": {"loss": "ce"}, "A+DSB": {"loss": "ce", "dsb": True}}
    assert methods.with_dsb(["A"], own) == own
    with pytest.raises(methods.UnknownMethod, match="'B'"):
        methods.with_dsb(["B"], own)


def test_base_method_strips_only_the_dsb_suffix():
    assert methods.base_method("LDAM-DRW+DSB") == "LDAM-DRW"
    assert methods.base_method("LDAM-DRW") == "LDAM-DRW"
    assert methods.base_method("Post-hoc LA (τ held-out)+DSB") == "Post-hoc LA (τ held-out)"
    assert methods.base_method("DSB") == "DSB"  # no suffix: the name itself


def test_dsb_pairs_are_the_methods_whose_dsb_form_is_present_in_order_of_appearance():
    names = ["LDAM+DSB", "CE", "cRT", "CE+DSB", "LDAM", "cRT", "Focal+DSB", "LDAM+DSB"]
    assert methods.dsb_pairs(names) == [("CE", "CE+DSB"), ("LDAM", "LDAM+DSB")]
    assert methods.dsb_pairs(iter(["CE", "CE+DSB"])) == [("CE", "CE+DSB")]  # any iterable, e.g. a column
    assert methods.dsb_pairs(["CE", "Focal+DSB"]) == []


def test_an_unknown_method_is_a_key_error_naming_the_close_ones():
    with pytest.raises(methods.UnknownMethod) as unknown:
        METHODS["Focall"]
    assert isinstance(unknown.value, KeyError)
    message = str(unknown.value)
    assert "'Focal'" in message and "did you mean" in message and "'Focall'" in message
    assert "Known methods: CE, Focal" in message
    with pytest.raises(KeyError, match="unknown method 'xyz'") as far:
        METHODS["xyz"]
    assert "did you mean" not in str(far.value)  # nothing close: no suggestion
    assert "Focall" not in METHODS and METHODS.get("Focall") is None  # membership and get() do not raise

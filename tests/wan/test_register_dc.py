"""`Register(..., datacenter=)`: the service's `dc` tag (a registry in another datacenter's LAN pool
reads it; tests/wan/test_pool.py sees it arrive), checked up front like every other argument."""

from __future__ import annotations

import pytest

from registry.register import AsyncRegister, Register, RegisterError

ARGS = ("svc", ":0", "", "127.0.0.1:7370", "g", "127.0.0.1:8080")


@pytest.mark.parametrize("cls", [Register, AsyncRegister])
def test_datacenter_is_the_dc_tag_dc1_by_default(cls: type) -> None:
    assert cls(*ARGS).tags["dc"] == "dc1"
    reg = cls(*ARGS, datacenter="eu-2", tags={"zone": "z"})
    assert reg.tags == {"zone": "z", "group": "g", "addr": "127.0.0.1:8080", "replicas": "10000", "dc": "eu-2"}
    assert reg.datacenter == "eu-2"


def test_set_tags_keeps_the_dc_tag() -> None:
    reg = Register(*ARGS, datacenter="eu-2", tags={"zone": "z"})
    reg.set_tags({"zone": "y"})  # replaces the extra tags, keeps the reserved ones (dc among them)
    assert (reg.tags["zone"], reg.tags["dc"]) == ("y", "eu-2")
    reg.set_tags({"dc": "eu-2"})  # the same value: allowed
    assert reg.tags["dc"] == "eu-2"


@pytest.mark.parametrize(("kw", "message"), [
    ({"datacenter": ""}, r"^datacenter must not be empty$"),
    ({"datacenter": "Dc1"}, r"^datacenter 'Dc1': use lower-case letters"),
    ({"datacenter": 1}, r"^datacenter must be a string such as 'dc1', not int$"),
    ({"datacenter": "x" * 65}, r"at most 64$"),
    ({"tags": {"dc": "dc2"}}, r"^tag 'dc' is set by datacenter= \('dc1'\), not 'dc2': pass datacenter='dc2' instead$"),
], ids=["empty", "upper", "int", "long", "tag"])
def test_a_bad_datacenter_is_refused_at_construction(kw: dict[str, object], message: str) -> None:
    with pytest.raises(RegisterError, match=message):
        Register(*ARGS, **kw)  # type: ignore[arg-type]


def test_set_tags_cannot_move_a_service_to_another_datacenter() -> None:
    reg = Register(*ARGS, datacenter="dc2")
    before = reg.tags
    with pytest.raises(RegisterError, match=r"^tag 'dc' is set by datacenter= \('dc2'\), not 'dc1'"):
        reg.set_tags({"dc": "dc1"})
    assert reg.tags == before

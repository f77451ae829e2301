"""Hostile or huge YAML: alias bombs and self-references are refused quickly, naming the file;
anchors and merge keys of normal size keep working; large files load in linear time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from hypetunnel.errors import IntentInvalid
from hypetunnel.model import yamldoc
from hypetunnel.model.loader import load_intent_file, load_intent_text


def billion_laughs(levels: int = 9) -> str:
    lines = ['a0: &a0 "lol"']
    for i in range(1, levels + 1):
        refs = ", ".join([f"*a{i - 1}"] * 9)
        lines.append(f"a{i}: &a{i} [{refs}]")
    lines.append(f"tenants: *a{levels}")
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_fast_naming_the_file(tmp_path: Path) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text(billion_laughs(9))
    start = time.process_time()
    with pytest.raises(IntentInvalid) as info:
        load_intent_file(bomb)
    assert time.process_time() - start < 1.0
    [e] = info.value.errors
    assert info.value.source == str(bomb) and str(info.value).startswith(f"{bomb}: ")
    assert "aliases expand to more than" in e.reason


def test_self_referencing_alias_is_refused() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text("tenants: &t [*t]\n", "loop.yaml")
    assert "refers to itself" in info.value.errors[0].reason


def test_a_few_levels_of_aliases_are_fine_and_counted() -> None:
    # 3 levels expand to 9^3 nodes: far under the bound, still refused later by the model.
    with pytest.raises(IntentInvalid) as info:
        load_intent_text(billion_laughs(3), "small.yaml")
    assert all("aliases" not in e.reason for e in info.value.errors)


def test_anchors_and_merge_keys_for_vm_templates_still_work() -> None:
    text = """\
defaults: &small {network: front, vcpus: 2, memory_mb: 1024}
"""
    doc = """\
tenants:
  - name: acme
    networks: [{name: front, cidr: 10.1.0.0/24}]
    vms:
      - &web {name: web1, network: front, vcpus: 2}
      - <<: *web
        name: web2
"""
    intent = load_intent_text(doc)
    vms = intent.tenants[0].vms
    assert [(v.name, v.vcpus, v.network) for v in vms] == [("web1", 2, "front"),
                                                          ("web2", 2, "front")]
    assert yamldoc.read_yaml(text, "x").data["defaults"]["vcpus"] == 2


def test_duplicate_key_next_to_a_merge_is_still_refused() -> None:
    doc = "a: &a {x: 1}\nb:\n  <<: *a\n  y: 1\n  y: 2\n"
    with pytest.raises(IntentInvalid) as info:
        yamldoc.read_yaml(doc, "dup.yaml")
    assert "duplicate key 'y'" in info.value.errors[0].reason
    assert "line 5" in info.value.errors[0].reason


def test_expansion_bound_counts_alias_nodes_not_file_nodes() -> None:
    # 200k plain items: big, but nothing expands.
    big = "items: [" + ", ".join(["1"] * 200_000) + "]\n"
    assert len(yamldoc.read_yaml(big, "big.yaml").data["items"]) == 200_000
    # 2 aliases of a 60k-item list add 120k nodes: over the bound.
    wide = "a: &a [" + ", ".join(["1"] * 60_000) + "]\nb: [*a, *a]\n"
    with pytest.raises(IntentInvalid):
        yamldoc.read_yaml(wide, "wide.yaml")


def test_deep_nesting_is_a_clear_error() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text("tenants: " + "[" * 5000 + "]" * 5000 + "\n", "deep.yaml")
    assert "malformed YAML" in info.value.errors[0].reason or "nests" in info.value.errors[0].reason


def test_multiple_documents_are_refused() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text("tenants: []\n---\ntenants: []\n", "two.yaml")
    assert "malformed YAML" in info.value.errors[0].reason


def test_empty_file_says_so() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text("# nothing here\n", "empty.yaml")
    assert "empty" in info.value.errors[0].reason


def _tenants(n: int, bad_key_last: bool = False) -> str:
    out = ["hypervisors:\n  - name: hv1\ntenants:\n"]
    for i in range(n):
        out.append(f"  - name: t{i}\n    networks:\n      - name: net\n        cidr: 10.0.0.0/24\n"
                   f"    vms:\n      - name: vm\n        network: net\n")
    if bad_key_last:
        out.append("    colour: red\n")
    return "".join(out)


def test_one_bad_key_at_the_end_of_a_large_file_is_found_with_its_line() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text(_tenants(2000, bad_key_last=True), "large.yaml")
    [e] = info.value.errors
    assert e.path == "tenants[1999].colour"
    assert f"(line {3 + 2000 * 7 + 1})" in e.reason


def test_loading_is_linear() -> None:
    # CPU time of 4x the tenants stays well under 4x squared (the old loader was superlinear).
    def cpu(n: int) -> float:
        text = _tenants(n)
        start = time.process_time()
        load_intent_text(text)
        return time.process_time() - start

    cpu(200)  # warm-up: imports, pydantic schema building
    small, large = cpu(1000), cpu(4000)
    assert large < 8 * small + 0.1, (small, large)


def test_control_character_is_one_clear_line() -> None:
    with pytest.raises(IntentInvalid) as info:
        load_intent_text("tenants: []\n\x07\n", "ctl.yaml")
    [e] = info.value.errors
    assert e.reason == ("malformed YAML: unacceptable character #x0007 "
                        "(control characters are not allowed)")
    assert "\n" not in str(info.value)


def test_byte_order_mark_and_non_ascii_comments_load() -> None:
    assert load_intent_text("\ufefftenants: []  # café \U0001f600\n").tenants == []

"""Hosts are Ray nodes; the hostname is a label (cluster.host_labels, pure)."""

from __future__ import annotations

import random

from cluster.host_labels import host_labels, safe_name

A = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c"
B = "ffee00112233445566778899aabbccddeeff00112233445566778899"
C = "0123456789abcdef0123456789abcdef0123456789abcdef01234567"


def test_a_unique_hostname_is_the_label():
    assert host_labels({A: ("gpu-a", A), B: ("gpu-b", B)}) == {A: "gpu-a", B: "gpu-b"}


def test_nodes_sharing_a_hostname_get_a_suffix_from_their_node_id():
    labels = host_labels({A: ("ubuntu", A), B: ("ubuntu", B), C: ("head", C)})
    assert labels == {A: "ubuntu-a1b2c3d4", B: "ubuntu-ffee0011", C: "head"}


def test_labels_do_not_depend_on_the_order_of_the_nodes():
    hosts = {A: ("ubuntu", A), B: ("ubuntu", B), C: ("ubuntu", C)}
    items = list(hosts.items())
    for seed in range(5):
        random.Random(seed).shuffle(items)
        assert host_labels(dict(items)) == host_labels(hosts)


def test_a_shared_prefix_lengthens_the_suffix_until_the_hosts_differ():
    twin = A[:8] + "0" * (len(A) - 8)
    labels = host_labels({A: ("ubuntu", A), twin: ("ubuntu", twin)})
    assert len(set(labels.values())) == 2 and all(label.startswith("ubuntu-a1b2c3d4") for label in labels.values())


def test_simulated_hosts_on_one_node_stay_apart():
    labels = host_labels({f"{A}#1": ("sim", A), f"{A}#2": ("sim", A)})
    assert len(set(labels.values())) == 2


def test_a_suffixed_label_never_takes_another_hosts_plain_name():
    labels = host_labels({A: ("ubuntu", A), B: ("ubuntu", B), C: ("ubuntu-a1b2c3d4", C)})
    assert labels[C] == "ubuntu-a1b2c3d4" and len(set(labels.values())) == 3


def test_unsafe_hostnames_become_safe_directory_names():
    assert safe_name("gpu/01 rack..") == "gpu-01-rack." and safe_name("..") == "host"
    assert host_labels({A: ("../etc", A)})[A] == ".-etc"

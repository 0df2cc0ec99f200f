"""Host labels: a Ray node is the host; its hostname is only a label (pure, no Ray).

Cloned VMs and default cloud images share hostnames, and so do several Ray nodes on one
machine. Every host of a run is keyed by its node identity; its label, which names its
artifact directory and its rows in the warehouse, is

* its name (``FLEETPHYSICS_HOST_ID`` on that node, else its hostname) when no other host of
  the run has that name, else
* ``name-<first 8 hex digits of its node id>``, lengthened only in the (astronomically rare)
  case where those digits do not tell the hosts apart.

A label depends only on the host's own node id and on which other hosts share its name, so
it is the same however the nodes are listed. Characters outside ``[A-Za-z0-9._-]`` become
``-`` and runs of dots one dot, so a label is always a safe directory name and warehouse id.
"""

from __future__ import annotations

import re
from collections import defaultdict

SUFFIX_DIGITS = 8
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


def safe_name(name: str) -> str:
    """A hostname as a directory name: unsafe characters to ``-``; never empty, never dots only."""
    cleaned = re.sub(r"\.{2,}", ".", _UNSAFE.sub("-", name.strip()))[:120]
    return cleaned if cleaned.strip(".") else "host"


def host_labels(hosts: dict[str, tuple[str, str]]) -> dict[str, str]:
    """``{key: (name, node_id)}`` to ``{key: label}``, every label distinct.

    ``key`` identifies a host (its node id, or node id and slot for simulated hosts the
    driver places side by side on one node); ``node_id`` is the Ray node's hex id, whose
    leading digits make the suffix.
    """
    by_name: dict[str, list[str]] = defaultdict(list)
    for key, (name, _) in hosts.items():
        by_name[safe_name(name)].append(key)
    labels: dict[str, str] = {}
    for name, keys in by_name.items():
        if len(keys) == 1:
            labels[keys[0]] = name
            continue
        digits = SUFFIX_DIGITS
        while True:
            suffixes = {k: _suffix(k, hosts[k][1], digits) for k in keys}
            if len(set(suffixes.values())) == len(keys) or digits > 64:
                break
            digits *= 2
        for k in keys:
            labels[k] = f"{name}-{suffixes[k]}"
    return _resolve_clashes(labels, hosts)


def _suffix(key: str, node_id: str, digits: int) -> str:
    text = safe_name(node_id)[:digits]
    if key != node_id and key.startswith(node_id):  # a slot on a shared node: keep it apart
        text += safe_name(key[len(node_id):])
    return text


def _resolve_clashes(labels: dict[str, str], hosts: dict[str, tuple[str, str]]) -> dict[str, str]:
    """A suffixed label that equals another host's plain name (a node literally called
    ``gpu-1a2b3c4d``) takes its full node id instead."""
    seen: dict[str, str] = {}
    out = dict(labels)
    for key in sorted(labels, key=lambda k: (labels[k] != safe_name(hosts[k][0]), k)):
        label = out[key]
        if label in seen:
            label = f"{safe_name(hosts[key][0])}-{safe_name(key)}"
            out[key] = label
        seen[label] = key
    return out

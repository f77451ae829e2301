"""Other systems' figures quoted next to ours, each with the place it comes from.

None of these was measured here: they are published defaults, goals or user reports, so a
reader can look each one up and judge how comparable it is.
"""

from __future__ import annotations

MOBILITY = (
    "For comparison (published, not measured here): QEMU's default maximum live-migration "
    "downtime is 300 ms (`DEFAULT_MIGRATE_SET_DOWNTIME` in QEMU's `migration/options.c`); "
    "vMotion iterates until the last pages fit its 500 ms switchover goal (Broadcom knowledge "
    "base article 436882, \"How to identify vMotion stun time\"); an OVN user reports 5-10 "
    "pings lost per live migration, because the destination chassis claims the port only "
    "after the source released it (openvswitch/ovs-issues#230).")

FAILOVER = (
    "For comparison (published, not measured here): a killed ovn-northd's OVSDB lock is "
    "released only after twice the database inactivity probe "
    "(openshift/cluster-network-operator#631), i.e. 10 s with the 5 s default probe "
    "(openvswitch/ovs commit 00d12bb, \"ovn pacemaker: Provide the option to configure "
    "inactivity probe value\") and 120 s with the 60 s that OpenShift sets; ONOS mastership "
    "hand-over about 0.5 s after an instance is lost is the figure in this project's "
    "reference notes (shared/reference/ANCHORS.md), for which no primary measurement was "
    "found.")

"""FCAPS, first slice: alarms (X.733/ONOS style), the state log of every resource, and webhook
notification of every alarm change.

    alarm    the alarm model and the kinds it knows
    book     the alarm book: one open alarm per (resource, kind), raise/clear/ack
    events   the state log's records, their keys and queries
    watch    pure: what a snapshot of the fabric says (state changes, standing faults)
    record   the recorder: book + state log, written to the store off the event loop
    webhook  delivery of alarm changes to HTTP targets, with a cursor per target
    monitor  the controller's task: snapshots, flow audits, failover, webhooks

Everything is kept in the store beside the intent (key prefix `fcaps/`), written by the active
controller only, so the book and the log survive a failover.
"""

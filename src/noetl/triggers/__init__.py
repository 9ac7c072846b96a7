"""Triggers: runs that start without a person typing `noetl exec`.

* Schedules (`schedules`, `scheduler`, `timing`): cron or interval schedules, declared in a
  playbook's top-level `schedules:` list or made through `/api/schedules`; every server runs the
  scheduler loop, and each tick starts exactly once across the servers on one store.
* Subscriptions (`subscriptions`, `consumer`): a playbook runs for each message on a NATS
  JetStream subject, once per message id inside a dedup window.

Design notes are in docs/triggers.md.
"""

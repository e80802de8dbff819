"""The composition root: the ``crm`` command (:mod:`crm.cli`) and the runner that opens a process's
clients and hosts its services (:mod:`crm.hub`). Nothing in ``shared/`` or ``services/`` imports it."""

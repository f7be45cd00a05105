"""The local platform behind ``kfloop serve``: a one-machine stand-in for Knative and KServe's routing.

The gateway with KServe's URL paths and the admin API (``gateway``), the routing state and how a request
picks a revision (``routing``), revisions as local processes (``revisions``), the controller that keeps
processes in step with the routing state (``controller``), per-revision counters (``revision_window``),
shadow traffic (``shadow``), the events sink (``events_sink``) and the trigger service as a supervised
child process (``trigger_process``).

May import: the core packages. The model servers are started as processes, never imported.
"""

"""``kfloop demo``: the whole loop on one machine, on the built-in churn data, with a timeline.

``run`` (options, ``run_demo``) and ``steps`` (the steps and the waiting between them) drive it;
``services`` starts and watches ``kfloop serve``, ``traffic`` replays customers and their labels,
``canary`` runs the canary analyses, ``follow`` and ``events`` turn the event log into timeline
entries, and ``timeline`` keeps them.
"""

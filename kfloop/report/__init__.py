"""The monitoring report: one self-contained HTML page (``page``) of what the loop saw and did, from
rows read out of the store (``data``) and matplotlib plots embedded as PNG (``plots``).

May import: ``kfloop.monitoring`` and everything below it.
"""

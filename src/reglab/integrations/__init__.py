"""Thin adapters of reglab's hooks to the trainers people use. Each imports its framework, an
optional extra (``pip install reglab[lightning]``); the library itself never imports them."""

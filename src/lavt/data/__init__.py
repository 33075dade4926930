"""Datasets for LAVT: the RefCOCO family read from the ``refer`` layout, and shared transforms."""

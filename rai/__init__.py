"""Support code for the labs of *Responsible AI at Scale*.

Learners import these modules; they are not asked to write them.

* :mod:`rai.data` -- offline data sets (UCI Adult), split and encoded.
* :mod:`rai.training` -- the ``accelerate`` training loop (CPU, one GPU, many).
* :mod:`rai.plots` -- the plots the labs use.
* :mod:`rai.checks` -- type-strict assertions for test cells.

Importing the package imports none of them (and so not torch): each lab
imports what it needs.
"""
__all__ = ["data", "training", "plots", "checks"]

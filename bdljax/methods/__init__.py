"""Inference methods, one file each: top-level ``init``/``update``/``sample`` functions and a ``build`` returning a
:class:`~bdljax.core.transform.Transform`; behaviour they share is a wrapper written once (``wrappers``)."""

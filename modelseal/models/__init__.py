"""The ML layer: what a sealed container carries when its content is a model.

* :mod:`modelseal.models.bundle` - ``MSBUNDLE/1``: a manifest and the model's files,
  64-byte aligned for random access (``docs/MODELS.md``); media type
  ``application/vnd.modelseal.bundle``.
* :mod:`modelseal.models.onnx_adapter`, :mod:`modelseal.models.safetensors_adapter` -
  list, read and replace stored tensors, leaving every other byte as it was.
* :mod:`modelseal.models.tensors` - element types and tensor descriptions they share.
* :mod:`modelseal.models.sealed_weights` - sealed-weights bundles: the ONNX graph and each
  weight as separate, individually addressable files.
* :mod:`modelseal.models.bundle_stream` - a bundle of files too large for memory, as a stream.
* :mod:`modelseal.models.reference` - the reference IML generator: a digit classifier
  fine-tuned per user (:mod:`~modelseal.models.digits`, :mod:`~modelseal.models.mlp`).
* :mod:`modelseal.models.errors` - ``bundle_invalid``, ``model_invalid``,
  ``tensor_unsupported``, ``examples_invalid``.

This package imports :mod:`modelseal.errors` and nothing else of ours; the
envelope never imports it. Submodules are imported on demand because numpy and
onnx take a while to load.
"""

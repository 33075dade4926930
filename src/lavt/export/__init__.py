"""Deployment formats: ONNX export (:mod:`lavt.export.onnx`); the torch-free runtime is
:mod:`lavt.onnx_runtime`."""

"""Exporting a model directory to ONNX (`bertforge.export.onnx`); the onnxruntime backend that
runs the graph is `bertforge.tasks.onnx_backend`.

Nothing is imported here: onnx and onnxruntime are optional extras, imported by the modules
that need them, so `import bertforge` never pulls them in.
"""

"""Exporting and compressing a model directory: ONNX export and an onnxruntime backend
(`bertforge.export.onnx`), dynamic int8 quantization (`bertforge.export.quantize`), task
distillation (`bertforge.export.distill`) and attention maps (`bertforge.export.attention`).

Nothing is imported here: onnx, onnxruntime and matplotlib are optional extras, imported by
the modules that need them, so `import bertforge` never pulls them in.
"""

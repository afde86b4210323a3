"""Making a fine-tuned model smaller or faster: task distillation into a small student
(`bertforge.compress.distill`, a `bertforge.train.Trainer` objective) and dynamic int8
quantization through onnxruntime (`bertforge.compress.quantize`).

Nothing is imported here: onnx and onnxruntime are optional extras, imported by the modules
that need them, so `import bertforge` never pulls them in.
"""

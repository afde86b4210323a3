"""Making a fine-tuned model smaller or faster: structured pruning into a standard smaller BERT
(`bertforge.compress.prune`), task distillation into a student (`bertforge.compress.distill`,
a `bertforge.train.Trainer` objective), dynamic int8 quantization through onnxruntime
(`bertforge.compress.quantize`), and the chain of the three over candidate students
(`bertforge.compress.chain`, measured by `bertforge.compress.measure`).

Nothing is imported here: onnx and onnxruntime are optional extras, imported by the modules
that need them, so `import bertforge` never pulls them in.
"""

"""ONNX export of the BERT budget regressor, and a runtime estimator that needs no torch.

``export.onnx.export_regressor(source, out, ExportConfig(int8=True))`` turns a saved
``predictor.bert.BertRegressor`` directory into an export directory:

    out/
      model.onnx           fp32 graph: input_ids, attention_mask [batch, sequence] -> logits [batch, 1]
      model.int8.onnx      the same, weights dynamically quantized to int8 (only with int8=True)
      tokenizer.json       the regressor's tokenizer, for ``tokenizers.Tokenizer.from_file``
      tale_onnx.json       ExportManifest: target, clamp, max length, inputs, padding, source
                           fingerprint, and the sha256 of every file above

``export.runtime.OnnxEstimator.load(out)`` reads it back with onnxruntime, tokenizers and numpy
only: it satisfies ``predictor.Estimator`` and imports neither torch nor transformers. Nothing in
this package imports torch at import time; ``export.onnx`` does inside its functions.
"""

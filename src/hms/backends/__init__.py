"""The two backends that run a weights folder for ``hms.inference``: ``pytorch`` (``HMSModule``
checkpoints, the training stack) and ``onnx`` (ONNX graphs with onnxruntime, no torch). Each is
imported only when a folder of its kind is opened, so the ONNX path never imports torch."""

"""crosscam's command line: one module per command group, joined in :mod:`pipeline.cli.main`."""

# Help text shared by every command that loads a ReID model.
RUNTIME_HELP = "Engine for torch models: auto (onnxruntime for fp32 on CPU, else torch), torch or onnxruntime."
REID_HELP = ("ReID weights: a registry name (`crosscam weights list`), a fast-reid or torchreid OSNet checkpoint "
             "(.pth, .pt, .pth.tar-N) or an .onnx model.")

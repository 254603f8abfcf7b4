"""The code TorchServe's worker runs, packed into every .mar (model_store/archive.py ships this
package whole): handlers, the classifier and nutrition models, photo decoding. It imports only
torch, transformers, openvino, PIL, numpy and itself."""

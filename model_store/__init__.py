"""Everything that puts models into TorchServe and talks to it.

worker/               what TorchServe's worker runs, packed whole into every .mar: the handlers, the
                      classifier (torch or OpenVINO), the nutrition head, photo decoding
reference.py          the per-dish reference nutrition table (reference_nutrition.csv)
checkpoint.py         resolves FOOD101_MODEL (hub id, local dir or `demo`) to a saved checkpoint
precision.py, openvino_convert.py, confident.py  the classifier's runtime x precision and its guard
archive.py / build.py build the .mar archives (`make models`)
server.py             TorchServe lifecycle (config, start, readiness, stop)
torchserve_client.py  the one client module our services use (inference, management, hot-swap)
"""

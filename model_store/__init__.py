"""Everything that puts models into TorchServe and talks to it.

handlers/          TorchServe handlers (food101, nutrition), packed into .mar archives
nutrition_model.py the nutrition head (version 0 = the reference table), shipped as an extra file
reference.py       the per-dish reference nutrition table (reference_nutrition.csv)
checkpoint.py      resolves FOOD101_MODEL (hub id, local dir or `demo`) to a saved checkpoint
archive.py / build.py  build the .mar archives (`make models`)
server.py          TorchServe lifecycle (config, start, readiness, stop)
client.py          the one client module our services use (inference, management, hot-swap)
"""

# A local stand-in for the official `python:3.11-slim-bookworm`, for machines without Docker Hub:
# Debian bookworm's Python 3.11 in a virtual environment at /usr/local, so that `python`, `pip`
# and site-packages sit where the official image has them. Built by tests/compose/run.sh only.
FROM local/debian:bookworm
ENV LANG=C.UTF-8
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && python3 -m venv /usr/local \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /root/.cache
CMD ["python3"]

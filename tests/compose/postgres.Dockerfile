# A local stand-in for the official `postgres:15`, for machines without Docker Hub: Debian
# bookworm's PostgreSQL 15 with an entry point that honours POSTGRES_USER, POSTGRES_PASSWORD and
# POSTGRES_DB on first start, keeps its data in /var/lib/postgresql/data (a volume) and has
# pg_isready on the PATH. Built by tests/compose/run.sh only.
FROM local/debian:bookworm
ENV LANG=C.UTF-8 \
    PATH=/usr/lib/postgresql/15/bin:$PATH \
    PGDATA=/var/lib/postgresql/data
RUN apt-get update \
 && apt-get install -y --no-install-recommends postgresql-15 \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin \
 && mkdir -p "$PGDATA" /var/run/postgresql \
 && chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
VOLUME /var/lib/postgresql/data
EXPOSE 5432
STOPSIGNAL SIGINT
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

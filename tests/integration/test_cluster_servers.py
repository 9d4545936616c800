"""The cluster servers' fixtures give each test its own database, prefix, vhost and bucket."""

from pathlib import Path

import psycopg
import redis

from tests.cluster_servers import (
    Postgres,
    RabbitMQ,
    Redis,
    S3Server,
    start_private_postgres,
    start_private_redis,
)


def test_a_postgres_database_of_its_own(postgres: Postgres) -> None:
    url = postgres.url.replace("postgresql+psycopg", "postgresql")
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT current_database()").fetchone() == (postgres.name,)


def test_redis_keys_under_the_prefix_are_cleaned(redis_server: Redis) -> None:
    client = redis.Redis.from_url(redis_server.url)
    client.set(f"{redis_server.prefix}:x", b"1")
    assert redis_server.keys() == [f"{redis_server.prefix}:x"]
    redis_server.clean()
    assert redis_server.keys() == []
    client.close()


def test_rabbitmq_vhost_takes_a_connection(rabbitmq: RabbitMQ) -> None:
    import kombu

    with kombu.Connection(rabbitmq.url, connect_timeout=10) as conn:
        conn.ensure_connection(max_retries=3)
        assert conn.connected


def test_s3_bucket_round_trip(s3_server: S3Server) -> None:
    bucket = s3_server.bucket()
    s3 = s3_server.client()
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    assert s3.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"


def test_private_servers_restart(tmp_path: Path) -> None:
    r = start_private_redis(tmp_path / "r")
    pg = start_private_postgres(tmp_path / "pg")
    try:
        client = redis.Redis(port=r.port)
        client.set("k", b"v")
        r.restart()
        assert client.get("k") is None  # nothing kept on disk: a real restart
        url = f"postgresql://postgres@127.0.0.1:{pg.port}/postgres"
        with psycopg.connect(url) as conn:
            conn.execute("CREATE TABLE t (x int)")
            conn.commit()
        pg.restart()
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT count(*) FROM t").fetchone() == (0,)
        client.close()
    finally:
        r.stop()
        pg.stop(remove=True)

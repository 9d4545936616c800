"""The cluster servers' fixtures give each test its own database, prefix, vhost and bucket."""

import psycopg
import redis

from tests.cluster_servers import Postgres, RabbitMQ, Redis, S3Server


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

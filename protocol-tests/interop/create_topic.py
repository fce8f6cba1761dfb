#!/usr/bin/env python3
"""Create a topic with librdkafka's admin client.

    PYTHONPATH=.tools/py python3 protocol-tests/interop/create_topic.py BOOTSTRAP TOPIC PARTITIONS

Exits 0 when the topic exists afterwards (created now or before).
"""
import sys

from confluent_kafka.admin import AdminClient, NewTopic


def main():
    bootstrap, topic, partitions = sys.argv[1], sys.argv[2], int(sys.argv[3])
    admin = AdminClient({"bootstrap.servers": bootstrap, "broker.address.family": "v4"})
    futures = admin.create_topics([NewTopic(topic, num_partitions=partitions, replication_factor=1)])
    for t, f in futures.items():
        try:
            f.result(timeout=30)
        except Exception as e:  # noqa: BLE001
            if "TOPIC_ALREADY_EXISTS" not in str(e):
                print(f"create {t}: {e}", file=sys.stderr)
                sys.exit(1)


if __name__ == "__main__":
    main()

"""Read a wfe topic with confluent-kafka and pyarrow alone.

Every wfe message value is an Arrow IPC stream (schema + one batch); the key is the workload
id; headers say the schema name and version. This reads a topic from the beginning to its end
now and prints the rows it found:

    pip install confluent-kafka pyarrow
    python read_topic.py --bootstrap 127.0.0.1:9092 --topic anomalies
"""

import argparse
import sys

import pyarrow as pa
from confluent_kafka import Consumer, TopicPartition


def messages(bootstrap: str, topic: str):
    """Every message of `topic`, partition by partition, from the beginning to its end now."""
    consumer = Consumer({
        "bootstrap.servers": bootstrap,
        "group.id": "read-topic-example",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
    })
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    for p in partitions:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
        if high <= low:
            continue
        consumer.assign([TopicPartition(topic, p, low)])
        while consumer.position([TopicPartition(topic, p)])[0].offset < high:
            msg = consumer.poll(10)
            if msg is None:
                # Transaction markers take offsets without being messages.
                continue
            if msg.error():
                sys.exit(f"{topic}/{p}: {msg.error()}")
            yield msg
    consumer.close()


def read(bootstrap: str, topic: str) -> pa.Table:
    """The rows of a wfe topic as one table."""
    batches = []
    for msg in messages(bootstrap, topic):
        headers = dict(msg.headers() or [])
        # Control messages (the end of a replay) carry no rows.
        if headers.get("wfe.control") is None:
            assert headers["wfe.schema"].decode() == topic, headers
            with pa.ipc.open_stream(msg.value()) as reader:
                batches.extend(reader)
    return pa.Table.from_batches(batches) if batches else pa.table({})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--bootstrap", default="127.0.0.1:9092")
    ap.add_argument("--topic", required=True)
    args = ap.parse_args()
    table = read(args.bootstrap, args.topic)
    print(f"{args.topic}: {table.num_rows} rows")
    if table.num_rows:
        print(table.schema)
        print(table.slice(0, 5))


if __name__ == "__main__":
    main()

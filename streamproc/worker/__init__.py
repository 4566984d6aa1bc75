"""The worker: the Faust app and its parts.

- :mod:`~streamproc.worker.app`: ``create_app`` wires topics, the processing agent, the learner
  task and the operations endpoints for one ``Settings``;
- :mod:`~streamproc.worker.agents`: the thin Faust side of a batch (nothing escapes the loop);
- :mod:`~streamproc.worker.batching`: how a batch is filled;
- :mod:`~streamproc.worker.delivery`: Faust's consumer delivering a fetch at a time;
- :mod:`~streamproc.worker.emitter`: publishes a batch's records with a plain aiokafka producer;
- :mod:`~streamproc.worker.heartbeat`, :mod:`~streamproc.worker.web`,
  :mod:`~streamproc.worker.metrics`: heartbeats in Redis, the HTTP endpoints, Prometheus;
- :mod:`~streamproc.worker.status`: ``streamproc status``, read from the heartbeats and the lag.

What a batch does to state lives below, in :mod:`streamproc.processor`, with no Kafka in it.
"""
